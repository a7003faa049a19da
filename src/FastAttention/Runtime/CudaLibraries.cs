// Which CUDA libraries load on this machine, from where, and their versions: for diagnostics (`info`), no GPU needed.
using FastAttention.Compilation;
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>A native library of the CUDA path.</summary>
public enum CudaLibrary
{
    /// <summary>The CUDA driver API (libcuda.so.1), installed with the GPU driver.</summary>
    Driver,
    /// <summary>NVRTC, the run-time CUDA C++ compiler.</summary>
    Nvrtc,
    /// <summary>cuBLAS.</summary>
    Cublas,
}

/// <summary>Whether a library loaded, from where, its version, or why it did not load.</summary>
/// <param name="Library">The library.</param>
/// <param name="IsLoaded">True when it loaded.</param>
/// <param name="LoadedFrom">The path or soname that loaded, else null.</param>
/// <param name="Version">"12.4" for the driver (the CUDA version it supports), NVRTC and cuBLAS ("12.4.5"); null when unknown.</param>
/// <param name="Error">Why it did not load (every candidate tried), or why its version could not be read; null when fine.</param>
public sealed record CudaLibraryStatus(CudaLibrary Library, bool IsLoaded, string? LoadedFrom, string? Version, string? Error);

/// <summary>Probes the CUDA libraries through the same resolver the bindings use (same search order, same environment overrides).</summary>
public static class CudaLibraries
{
    /// <summary>Loads <paramref name="library"/> if it is not loaded yet and reports on it. Never throws for a missing library.</summary>
    public static CudaLibraryStatus Probe(CudaLibrary library)
    {
        NativeLibraryId id = library switch
        {
            CudaLibrary.Driver => NativeLibraryId.CudaDriver,
            CudaLibrary.Nvrtc => NativeLibraryId.Nvrtc,
            _ => NativeLibraryId.Cublas,
        };
        NativeLoadResult load = NativeLibraries.Get(id);
        if (!load.IsLoaded)
        {
            return new CudaLibraryStatus(library, false, null, null, load.Error);
        }
        try
        {
            string version = library switch
            {
                CudaLibrary.Driver => FormatCudaVersion(CudaDevice.DriverVersion),
                CudaLibrary.Nvrtc => $"{NvrtcInfo.Current.Version.Major}.{NvrtcInfo.Current.Version.Minor}",
                _ => CublasVersion(),
            };
            return new CudaLibraryStatus(library, true, load.LoadedFrom, version, null);
        }
        catch (Exception e) when (e is CudaException or CublasException or NvrtcCompilationException or EntryPointNotFoundException or DllNotFoundException)
        {
            return new CudaLibraryStatus(library, true, load.LoadedFrom, null, e.Message);
        }
    }

    /// <summary>All three, driver first.</summary>
    public static IReadOnlyList<CudaLibraryStatus> ProbeAll() =>
        [Probe(CudaLibrary.Driver), Probe(CudaLibrary.Nvrtc), Probe(CudaLibrary.Cublas)];

    /// <summary>12040 → "12.4".</summary>
    public static string FormatCudaVersion(int version) => $"{version / 1000}.{version % 1000 / 10}";

    private static string CublasVersion()
    {
        NativeStatus.Check(Cublas.cublasGetProperty(0, out int major));
        NativeStatus.Check(Cublas.cublasGetProperty(1, out int minor));
        NativeStatus.Check(Cublas.cublasGetProperty(2, out int patch));
        return $"{major}.{minor}.{patch}";
    }
}
