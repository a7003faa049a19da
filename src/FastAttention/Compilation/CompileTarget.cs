// What NVRTC produces: a CUBIN for the device's exact sm_XY, or PTX for the newest architecture NVRTC knows.
using FastAttention.Runtime;

namespace FastAttention.Compilation;

/// <summary>The kind of code a compiled module holds.</summary>
public enum KernelImageKind
{
    /// <summary>Machine code for one exact architecture (sm_XY); loads without JIT.</summary>
    Cubin,
    /// <summary>PTX for a virtual architecture (compute_XY); the driver JIT-compiles it when loading.</summary>
    Ptx,
}

/// <summary>An architecture and the image kind to produce for it.</summary>
/// <param name="Architecture">The compute capability to compile for.</param>
/// <param name="Kind">CUBIN or PTX.</param>
public readonly record struct CompileTarget(ComputeCapability Architecture, KernelImageKind Kind)
{
    /// <summary>A CUBIN for <paramref name="architecture"/>.</summary>
    public static CompileTarget Cubin(ComputeCapability architecture) => new(architecture, KernelImageKind.Cubin);

    /// <summary>PTX for <paramref name="architecture"/>.</summary>
    public static CompileTarget Ptx(ComputeCapability architecture) => new(architecture, KernelImageKind.Ptx);

    /// <summary>The NVRTC option that selects this target, e.g. <c>--gpu-architecture=sm_90</c>.</summary>
    public string ArchitectureOption =>
        $"--gpu-architecture={(Kind == KernelImageKind.Cubin ? Architecture.SmName : Architecture.ComputeName)}";

    /// <summary>
    /// The target for a device: a CUBIN for its exact architecture when NVRTC supports it, otherwise PTX for
    /// the newest supported architecture not newer than the device (the driver JIT-compiles it).
    /// </summary>
    /// <param name="device">The device's compute capability.</param>
    /// <param name="supported">What NVRTC can compile for (<see cref="NvrtcInfo.SupportedArchitectures"/>).</param>
    /// <exception cref="ArgumentNullException"><paramref name="supported"/> is null.</exception>
    /// <exception cref="NotSupportedException">Every supported architecture is newer than the device.</exception>
    public static CompileTarget ForDevice(ComputeCapability device, IReadOnlyList<ComputeCapability> supported)
    {
        ArgumentNullException.ThrowIfNull(supported);
        if (supported.Contains(device))
        {
            return Cubin(device);
        }
        ComputeCapability? best = null;
        foreach (ComputeCapability arch in supported)
        {
            if (arch <= device && (best is null || arch > best.Value))
            {
                best = arch;
            }
        }
        return best is { } b
            ? Ptx(b)
            : throw new NotSupportedException(
                $"NVRTC supports {string.Join(", ", supported.Select(a => a.SmName))}; none runs on a compute capability {device} device.");
    }

    /// <summary>"sm_90 (cubin)".</summary>
    public override string ToString() =>
        Kind == KernelImageKind.Cubin ? $"{Architecture.SmName} (cubin)" : $"{Architecture.ComputeName} (ptx)";
}
