// The one native-library resolver of the assembly: finds libcuda, NVRTC and cuBLAS (env overrides,
// toolkit folders, then sonames newest first), loads each lazily once, and explains failures.
using System.Collections.Concurrent;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FastAttention.Interop;

/// <summary>The native libraries the CUDA path binds to.</summary>
internal enum NativeLibraryId
{
    /// <summary>The CUDA driver API (libcuda.so.1 / nvcuda.dll), installed with the GPU driver.</summary>
    CudaDriver,
    /// <summary>NVRTC, the run-time CUDA C++ compiler (CUDA toolkit or Debian's libnvrtc11.2).</summary>
    Nvrtc,
    /// <summary>cuBLAS (CUDA toolkit).</summary>
    Cublas,
}

/// <summary>Outcome of loading one native library: a handle and the path that worked, or why nothing did.</summary>
/// <param name="Id">The library.</param>
/// <param name="Handle">The OS handle; 0 when loading failed.</param>
/// <param name="LoadedFrom">The candidate that loaded (a path or a soname), or null.</param>
/// <param name="Error">Why loading failed (names every candidate tried and the loader's message), or null.</param>
internal sealed record NativeLoadResult(NativeLibraryId Id, nint Handle, string? LoadedFrom, string? Error)
{
    /// <summary>True when the library is loaded.</summary>
    public bool IsLoaded => Handle != 0;
}

/// <summary>
/// Resolves the logical library names used by the <c>[LibraryImport]</c> bindings
/// (<see cref="Cuda"/>, <see cref="Nvrtc"/>, <see cref="Cublas"/>). Nothing is loaded until a binding
/// of that library is first called, so a missing library breaks only what needs it.
/// </summary>
internal static class NativeLibraries
{
    /// <summary>Logical name of the CUDA driver library in <c>[LibraryImport]</c>.</summary>
    public const string Cuda = "fastattention-cuda";
    /// <summary>Logical name of NVRTC in <c>[LibraryImport]</c>.</summary>
    public const string Nvrtc = "fastattention-nvrtc";
    /// <summary>Logical name of cuBLAS in <c>[LibraryImport]</c>.</summary>
    public const string Cublas = "fastattention-cublas";

    /// <summary>Environment variable with the exact file (or soname) of the CUDA driver library.</summary>
    public const string CudaDriverPathVariable = "FASTATTN_CUDA_DRIVER_PATH";
    /// <summary>Environment variable with the exact file (or soname) of NVRTC.</summary>
    public const string NvrtcPathVariable = "FASTATTN_NVRTC_PATH";
    /// <summary>Environment variable with the exact file (or soname) of cuBLAS.</summary>
    public const string CublasPathVariable = "FASTATTN_CUBLAS_PATH";

    private static readonly ConcurrentDictionary<NativeLibraryId, Lazy<NativeLoadResult>> s_loaded = new();

    /// <summary>Installs the resolver; runs once, when the assembly is first used.</summary>
    [ModuleInitializer]
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Usage", "CA2255",
        Justification = "One DllImport resolver per assembly is allowed; a module initializer is the one place guaranteed to run before any binding.")]
    internal static void Register() =>
        NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);

    /// <summary>Loads <paramref name="id"/> once per process (later calls return the first outcome).</summary>
    public static NativeLoadResult Get(NativeLibraryId id) =>
        s_loaded.GetOrAdd(id, static i => new Lazy<NativeLoadResult>(() => Load(i, Environment.GetEnvironmentVariable))).Value;

    /// <summary>The handle of a loaded library.</summary>
    /// <exception cref="DllNotFoundException">The library could not be loaded (the message says what was tried and why it failed).</exception>
    public static nint Require(NativeLibraryId id)
    {
        NativeLoadResult result = Get(id);
        return result.IsLoaded ? result.Handle : throw new DllNotFoundException(result.Error);
    }

    private static nint Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath) =>
        libraryName switch
        {
            Cuda => Require(NativeLibraryId.CudaDriver),
            Nvrtc => Require(NativeLibraryId.Nvrtc),
            Cublas => Require(NativeLibraryId.Cublas),
            _ => 0,
        };

    /// <summary>Name of the override variable for <paramref name="id"/>.</summary>
    public static string OverrideVariable(NativeLibraryId id) => id switch
    {
        NativeLibraryId.CudaDriver => CudaDriverPathVariable,
        NativeLibraryId.Nvrtc => NvrtcPathVariable,
        _ => CublasPathVariable,
    };

    /// <summary>
    /// Tries the candidates of <paramref name="id"/> in order and returns the first that loads.
    /// <paramref name="getEnvironment"/> reads environment variables (tests pass their own).
    /// An override variable, when set, is the only candidate: a wrong override fails loudly instead
    /// of silently loading another copy.
    /// </summary>
    public static NativeLoadResult Load(NativeLibraryId id, Func<string, string?> getEnvironment)
    {
        string variable = OverrideVariable(id);
        string? overridePath = getEnvironment(variable);
        if (!string.IsNullOrWhiteSpace(overridePath))
        {
            overridePath = overridePath.Trim();
            if (IsPath(overridePath) && !File.Exists(overridePath))
            {
                return new NativeLoadResult(id, 0, null,
                    $"{Describe(id)} not loaded: {variable} is set to '{overridePath}', but that file does not exist. " +
                    $"Point {variable} at the library file or unset it to search the usual places.");
            }
            return TryLoad(overridePath, out nint handle, out string error)
                ? new NativeLoadResult(id, handle, overridePath, null)
                : new NativeLoadResult(id, 0, null,
                    $"{Describe(id)} not loaded: {variable} is set to '{overridePath}', but it could not be loaded: {error}");
        }

        var failures = new List<string>();
        foreach (string candidate in Candidates(id, getEnvironment))
        {
            if (IsPath(candidate) && !File.Exists(candidate))
            {
                failures.Add($"{candidate}: no such file");
                continue;
            }
            if (TryLoad(candidate, out nint handle, out string error))
            {
                return new NativeLoadResult(id, handle, candidate, null);
            }
            failures.Add(error.StartsWith(candidate, StringComparison.Ordinal) ? error : $"{candidate}: {error}");
        }
        return new NativeLoadResult(id, 0, null, $"{Describe(id)} not found. Tried {string.Join("; ", failures)}. {Hint(id)}");
    }

    /// <summary>
    /// The candidates for <paramref name="id"/>, in probing order (the override variable aside):
    /// for toolkit libraries <c>$CUDA_PATH</c>, <c>$CUDA_HOME</c> and <c>/usr/local/cuda</c> library folders,
    /// then the bare sonames (the system loader's search: ld.so cache, <c>LD_LIBRARY_PATH</c>), newest first.
    /// The driver is only looked up by soname: toolkit folders hold a stub libcuda that cannot run kernels.
    /// </summary>
    public static IReadOnlyList<string> Candidates(NativeLibraryId id, Func<string, string?> getEnvironment)
    {
        bool windows = OperatingSystem.IsWindows();
        string[] names = (id, windows) switch
        {
            (NativeLibraryId.CudaDriver, false) => ["libcuda.so.1"],
            (NativeLibraryId.CudaDriver, true) => ["nvcuda.dll"],
            (NativeLibraryId.Nvrtc, false) => ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"],
            (NativeLibraryId.Nvrtc, true) => ["nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll"],
            (_, false) => ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11"],
            (_, true) => ["cublas64_13.dll", "cublas64_12.dll", "cublas64_11.dll"],
        };
        var result = new List<string>();
        if (id != NativeLibraryId.CudaDriver)
        {
            var roots = new List<string>();
            foreach (string variable in (string[])["CUDA_PATH", "CUDA_HOME"])
            {
                string? root = getEnvironment(variable);
                if (!string.IsNullOrWhiteSpace(root) && !roots.Contains(root.Trim()))
                {
                    roots.Add(root.Trim());
                }
            }
            if (!windows && !roots.Contains("/usr/local/cuda"))
            {
                roots.Add("/usr/local/cuda");
            }
            foreach (string root in roots)
            {
                foreach (string name in names)
                {
                    result.Add(windows ? Path.Combine(root, "bin", name) : Path.Combine(root, "lib64", name));
                }
            }
        }
        result.AddRange(names);
        return result;
    }

    /// <summary>True for a path (loaded as is) rather than a bare name (searched by the system loader).</summary>
    private static bool IsPath(string candidate) => candidate.Contains('/') || candidate.Contains('\\');

    private static bool TryLoad(string candidate, out nint handle, out string error)
    {
        try
        {
            handle = NativeLibrary.Load(candidate);
            error = "";
            return true;
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
        {
            handle = 0;
            // .NET wraps the loader's message in advice about strace and LD_DEBUG; its last line is the loader's own.
            error = e.Message.Trim().Split('\n')[^1].Trim();
            return false;
        }
    }

    private static string Describe(NativeLibraryId id) => id switch
    {
        NativeLibraryId.CudaDriver => "CUDA driver library",
        NativeLibraryId.Nvrtc => "NVRTC (CUDA run-time compiler)",
        _ => "cuBLAS",
    };

    private static string Hint(NativeLibraryId id) => id switch
    {
        NativeLibraryId.CudaDriver => $"Install the NVIDIA driver, or set {CudaDriverPathVariable} to libcuda.so.1.",
        NativeLibraryId.Nvrtc =>
            $"Install the CUDA toolkit's NVRTC (or Debian's libnvrtc11.2 from non-free), set CUDA_PATH, or set {NvrtcPathVariable} to the library file.",
        _ => $"Install the CUDA toolkit's cuBLAS, set CUDA_PATH, or set {CublasPathVariable} to the library file.",
    };
}
