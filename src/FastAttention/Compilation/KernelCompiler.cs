// Compiles kernel specialisations with NVRTC (CUBIN for the exact sm_XY, PTX fallback), through a KernelCache.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using FastAttention.Interop;
using FastAttention.Runtime;

namespace FastAttention.Compilation;

/// <summary>
/// Compiles <see cref="KernelSpecialization"/>s for a <see cref="CompileTarget"/> with NVRTC, caching the
/// results (memory and disk) by program text, options, target and NVRTC version. Thread-safe.
/// </summary>
public sealed class KernelCompiler
{
    private static readonly Lazy<KernelCompiler> s_shared = new(() => new KernelCompiler(KernelCache.CreateDefault()));
    private readonly ConcurrentDictionary<(KernelSpecialization, CompileTarget), (string Program, IReadOnlyList<string> Options, string Key)> _requests = new();
    private long _compilations;
    private long _compileTicks;

    /// <summary>A compiler with the given cache and options.</summary>
    /// <param name="cache">The cache (null: a memory-only cache of its own).</param>
    /// <param name="options">Compiler settings (null: <see cref="CompileOptions.Default"/>).</param>
    public KernelCompiler(KernelCache? cache = null, CompileOptions? options = null)
    {
        Cache = cache ?? new KernelCache(null);
        Options = options ?? CompileOptions.Default;
    }

    /// <summary>The process-wide compiler, caching in <see cref="KernelCache.DefaultDirectory"/>.</summary>
    public static KernelCompiler Shared => s_shared.Value;

    /// <summary>The cache.</summary>
    public KernelCache Cache { get; }

    /// <summary>The compiler settings.</summary>
    public CompileOptions Options { get; }

    /// <summary>How many times this compiler ran NVRTC (cache hits excluded).</summary>
    public long Compilations => Interlocked.Read(ref _compilations);

    /// <summary>Total time spent in NVRTC by this compiler.</summary>
    public TimeSpan CompileTime => TimeSpan.FromTicks(Interlocked.Read(ref _compileTicks));

    /// <summary>The target for <paramref name="device"/> with the loaded NVRTC (see <see cref="CompileTarget.ForDevice"/>).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="DllNotFoundException">NVRTC cannot be loaded.</exception>
    /// <exception cref="NotSupportedException">NVRTC cannot compile for the device.</exception>
    public static CompileTarget TargetFor(CudaDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return CompileTarget.ForDevice(device.ComputeCapability, NvrtcInfo.Current.SupportedArchitectures);
    }

    /// <summary>Compiles <paramref name="specialization"/> for <paramref name="target"/>, or returns the cached module.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="specialization"/> is null.</exception>
    /// <exception cref="DllNotFoundException">NVRTC cannot be loaded.</exception>
    /// <exception cref="NotSupportedException">The loaded NVRTC cannot compile for the target's architecture.</exception>
    /// <exception cref="FileNotFoundException">The specialisation names a source file that is not embedded.</exception>
    /// <exception cref="NvrtcCompilationException">Compilation failed; the exception carries the full log and the options.</exception>
    public CompiledModule Compile(KernelSpecialization specialization, CompileTarget target)
    {
        ArgumentNullException.ThrowIfNull(specialization);
        NvrtcInfo nvrtc = NvrtcInfo.Current;
        if (!nvrtc.SupportedArchitectures.Contains(target.Architecture))
        {
            throw new NotSupportedException(
                $"{nvrtc} cannot compile for {target.Architecture.SmName}; it supports {string.Join(", ", nvrtc.SupportedArchitectures.Select(a => a.SmName))}.");
        }
        // The program text, options and key of a request never change, so repeated requests skip hashing.
        var (program, options, key) = _requests.GetOrAdd((specialization, target), static (request, state) =>
        {
            var (spec, t) = request;
            string text = KernelSources.Program(spec);
            IReadOnlyList<string> list = state.Options.ToNvrtcOptions(t, spec);
            return (text, list, CacheKey(text, list, t, state.Version));
        }, (Options, nvrtc.Version));
        return Cache.GetOrCompile(specialization, target, key, options,
            () => CompileProgram(specialization.SourceFile, program, options, target.Kind));
    }

    /// <summary>Compiles <paramref name="specialization"/> for <paramref name="device"/> (<see cref="TargetFor"/>).</summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="DllNotFoundException">NVRTC cannot be loaded.</exception>
    /// <exception cref="NotSupportedException">NVRTC cannot compile for the device.</exception>
    /// <exception cref="NvrtcCompilationException">Compilation failed.</exception>
    public CompiledModule Compile(KernelSpecialization specialization, CudaDevice device) =>
        Compile(specialization, TargetFor(device));

    /// <summary>SHA-256 (hex) of everything that determines the output.</summary>
    internal static string CacheKey(string program, IReadOnlyList<string> options, CompileTarget target, Version nvrtcVersion)
    {
        var text = new StringBuilder()
            .Append("fastattention-kernel-cache 1\n")
            .Append("nvrtc ").Append(nvrtcVersion.ToString(2)).Append('\n')
            .Append("target ").Append(target.ToString()).Append('\n');
        foreach (string option in options) text.Append("option ").Append(option).Append('\n');
        text.Append("program sha256 ").Append(Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(program))));
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    private unsafe (byte[] Image, string Log) CompileProgram(string programName, string program, IReadOnlyList<string> options, KernelImageKind kind)
    {
        long start = Stopwatch.GetTimestamp();
        NativeStatus.Check(Nvrtc.nvrtcCreateProgram(out nint handle, program, programName, 0, null, null));
        try
        {
            NvrtcResult result;
            using (var optionArray = new NativeText.Utf8Array(options))
            {
                result = Nvrtc.nvrtcCompileProgram(handle, optionArray.Count, optionArray.Pointer);
            }
            string log = ReadLog(handle);
            if (result != NvrtcResult.Success)
            {
                throw new NvrtcCompilationException(NativeStatus.NvrtcErrorName(result), $"nvrtcCompileProgram({programName})", log, options);
            }
            byte[] image = kind == KernelImageKind.Cubin ? ReadCubin(handle) : ReadPtx(handle);
            return (image, log);
        }
        finally
        {
            Nvrtc.nvrtcDestroyProgram(ref handle);
            Interlocked.Increment(ref _compilations);
            Interlocked.Add(ref _compileTicks, Stopwatch.GetElapsedTime(start).Ticks);
        }
    }

    private static unsafe string ReadLog(nint program) =>
        Encoding.UTF8.GetString(ReadBuffer(program, "ProgramLog", &Nvrtc.nvrtcGetProgramLogSize, &Nvrtc.nvrtcGetProgramLog)).TrimEnd('\0');

    private static unsafe byte[] ReadCubin(nint program) =>
        ReadBuffer(program, "CUBIN", &Nvrtc.nvrtcGetCUBINSize, &Nvrtc.nvrtcGetCUBIN);

    private static unsafe byte[] ReadPtx(nint program) =>
        ReadBuffer(program, "PTX", &Nvrtc.nvrtcGetPTXSize, &Nvrtc.nvrtcGetPTX);

    /// <summary>Reads an NVRTC output whose size is queried first (nvrtcGet{what}Size, then nvrtcGet{what}).</summary>
    private static unsafe byte[] ReadBuffer(nint program, string what,
        delegate*<nint, out nuint, NvrtcResult> getSize, delegate*<nint, byte*, NvrtcResult> get)
    {
        NativeStatus.Check(getSize(program, out nuint size), $"nvrtcGet{what}Size(program)");
        var bytes = new byte[checked((int)size)];
        fixed (byte* p = bytes)
        {
            NativeStatus.Check(get(program, p), $"nvrtcGet{what}(program)");
        }
        return bytes;
    }
}
