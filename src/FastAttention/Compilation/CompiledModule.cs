// The result of compiling one specialisation for one target: the CUBIN/PTX image, the log, and per-kernel resource usage.
namespace FastAttention.Compilation;

/// <summary>Where a <see cref="CompiledModule"/> came from.</summary>
public enum CompiledModuleOrigin
{
    /// <summary>NVRTC compiled it in this process.</summary>
    Compiled,
    /// <summary>It was read from the disk cache.</summary>
    DiskCache,
}

/// <summary>A compiled kernel program, ready to load with <see cref="Runtime.CudaModule.Load(Runtime.CudaContext, CompiledModule)"/>.</summary>
public sealed class CompiledModule
{
    private readonly byte[] _image;

    internal CompiledModule(KernelSpecialization specialization, CompileTarget target, byte[] image, string log,
        IReadOnlyList<string> options, string cacheKey, CompiledModuleOrigin origin)
    {
        Specialization = specialization;
        Target = target;
        _image = image;
        Log = log;
        Options = options;
        CacheKey = cacheKey;
        Origin = origin;
        ResourceUsage = PtxasReport.Parse(log);
    }

    /// <summary>What was compiled.</summary>
    public KernelSpecialization Specialization { get; }

    /// <summary>The architecture and image kind.</summary>
    public CompileTarget Target { get; }

    /// <summary>The CUBIN, or the NUL-terminated PTX text.</summary>
    public ReadOnlyMemory<byte> Image => _image;

    /// <summary>The NVRTC program log (warnings and, for CUBIN, the ptxas report).</summary>
    public string Log { get; }

    /// <summary>The NVRTC options used.</summary>
    public IReadOnlyList<string> Options { get; }

    /// <summary>The cache key (SHA-256 of program text, options, target and NVRTC version), hex.</summary>
    public string CacheKey { get; }

    /// <summary>Compiled now or read from disk.</summary>
    public CompiledModuleOrigin Origin { get; }

    /// <summary>
    /// ptxas resource usage per kernel name (CUBIN targets; empty for PTX, whose resources are known only once
    /// the driver has JIT-compiled it — see <see cref="Runtime.CudaKernel.Attributes"/>).
    /// </summary>
    public IReadOnlyDictionary<string, KernelResourceUsage> ResourceUsage { get; }

    /// <summary>"utility_f16 for sm_90 (cubin), 5.2 KiB".</summary>
    public override string ToString() => $"{Specialization.Name} for {Target}, {_image.Length / 1024.0:F1} KiB";
}
