// Chooses CUDA or the CPU engine: CUDA when the driver loads, an sm_80+ device exists and NVRTC loads; otherwise CPU, with the reason.
using FastAttention.Compilation;
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>Where attention runs.</summary>
public enum ComputeBackend
{
    /// <summary>The SIMD CPU engine (FastAttention.Cpu).</summary>
    Cpu,
    /// <summary>CUDA kernels compiled with NVRTC.</summary>
    Cuda,
}

/// <summary>What the caller asks for.</summary>
public enum BackendPreference
{
    /// <summary>CUDA when usable, otherwise the CPU.</summary>
    Auto,
    /// <summary>The CPU, whatever is installed.</summary>
    Cpu,
    /// <summary>CUDA or an error.</summary>
    Cuda,
}

/// <summary>The chosen backend and why.</summary>
/// <param name="Backend">The backend.</param>
/// <param name="Reason">A sentence for logs: why this backend (e.g. "CUDA driver library not found ...").</param>
/// <param name="Device">The CUDA device when <paramref name="Backend"/> is CUDA, else null.</param>
/// <param name="Nvrtc">The NVRTC in use when <paramref name="Backend"/> is CUDA, else null.</param>
public sealed record BackendSelection(ComputeBackend Backend, string Reason, CudaDevice? Device, NvrtcInfo? Nvrtc);

/// <summary>Chooses between the CUDA and the CPU backends.</summary>
public static class BackendSelector
{
    /// <summary>
    /// The oldest GPU the kernels run on: the prelude uses <c>cp.async</c>, bf16 <c>mma.sync</c> and
    /// <c>ldmatrix</c>, which need compute capability 8.0 (Ampere).
    /// </summary>
    public static ComputeCapability MinimumComputeCapability { get; } = new(8, 0);

    /// <summary>Why a device cannot run the kernels (too old, or NVRTC cannot target it), or null when it can.</summary>
    internal static string? UnsupportedDeviceReason(string device, ComputeCapability capability, NvrtcInfo? nvrtc)
    {
        if (capability < MinimumComputeCapability)
        {
            return $"{device} has compute capability {capability}; the kernels need {MinimumComputeCapability} or newer (cp.async, bf16 mma.sync).";
        }
        if (nvrtc is not null && !nvrtc.SupportedArchitectures.Any(a => a <= capability))
        {
            return $"{nvrtc} cannot compile for {device} (compute capability {capability}).";
        }
        return null;
    }

    /// <summary>
    /// Chooses a backend. <see cref="BackendPreference.Auto"/> picks CUDA when the driver library loads,
    /// initialises, reports device <paramref name="deviceOrdinal"/>, and NVRTC loads; otherwise the CPU,
    /// with the first reason CUDA is unusable (driver missing, no device, NVRTC missing, ...).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="deviceOrdinal"/> is negative.</exception>
    /// <exception cref="NotSupportedException"><see cref="BackendPreference.Cuda"/> was asked for and CUDA is unusable (the message says why).</exception>
    public static BackendSelection Select(BackendPreference preference = BackendPreference.Auto, int deviceOrdinal = 0) =>
        Select(preference, deviceOrdinal, CudaProbe.System);

    internal static BackendSelection Select(BackendPreference preference, int deviceOrdinal, CudaProbe probe)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(deviceOrdinal);
        if (preference == BackendPreference.Cpu)
        {
            return new BackendSelection(ComputeBackend.Cpu, "The CPU backend was requested.", null, null);
        }
        BackendSelection selection = Probe(deviceOrdinal, probe);
        if (preference == BackendPreference.Cuda && selection.Backend != ComputeBackend.Cuda)
        {
            throw new NotSupportedException($"The CUDA backend was requested but is unusable: {selection.Reason}");
        }
        return selection;
    }

    private static BackendSelection Probe(int ordinal, CudaProbe probe)
    {
        static BackendSelection Cpu(string reason) =>
            new(ComputeBackend.Cpu, reason + " Using the CPU engine.", null, null);

        if (probe.DriverLibraryError() is { } driverError)
        {
            return Cpu(driverError);
        }
        int count;
        try
        {
            count = probe.DeviceCount();
        }
        catch (CudaException e)
        {
            return Cpu($"The CUDA driver failed to initialise: {e.Message}");
        }
        if (count == 0)
        {
            return Cpu("The CUDA driver reports no device.");
        }
        if (ordinal >= count)
        {
            return Cpu($"CUDA device {ordinal} was asked for, but the driver reports {count} device(s).");
        }
        if (!probe.TryGetNvrtc(out NvrtcInfo? nvrtc, out string nvrtcError))
        {
            return Cpu(nvrtcError);
        }
        CudaDevice device;
        try
        {
            device = probe.GetDevice(ordinal);
        }
        catch (CudaException e)
        {
            return Cpu($"CUDA device {ordinal} could not be queried: {e.Message}");
        }
        if (UnsupportedDeviceReason(device.ToString(), device.ComputeCapability, nvrtc) is { } unsupported)
        {
            return Cpu(unsupported);
        }
        return new BackendSelection(ComputeBackend.Cuda, $"CUDA device {ordinal}: {device}, {nvrtc}.", device, nvrtc);
    }
}

/// <summary>The checks <see cref="BackendSelector"/> makes, replaceable in tests.</summary>
/// <param name="DriverLibraryError">Null when the driver library loads, else why not.</param>
/// <param name="DeviceCount">Number of devices (throws <see cref="CudaException"/> when cuInit fails).</param>
/// <param name="TryGetNvrtc">NVRTC, or why it is unusable.</param>
/// <param name="GetDevice">The device with an ordinal.</param>
internal sealed record CudaProbe(Func<string?> DriverLibraryError, Func<int> DeviceCount, CudaProbe.NvrtcGetter TryGetNvrtc,
    Func<int, CudaDevice> GetDevice)
{
    public delegate bool NvrtcGetter(out NvrtcInfo? info, out string reason);

    /// <summary>The real checks.</summary>
    public static CudaProbe System { get; } = new(
        () => NativeLibraries.Get(NativeLibraryId.CudaDriver).Error,
        () => CudaDevice.Count,
        NvrtcInfo.TryGetCurrent,
        CudaDevice.Get);
}
