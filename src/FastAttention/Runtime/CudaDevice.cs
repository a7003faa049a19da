// Device discovery: count, names, compute capability, SMs, memory and shared-memory limits, read once from the driver.
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>A CUDA device and the properties kernels are tuned for.</summary>
public sealed class CudaDevice
{
    private CudaDevice(int ordinal)
    {
        NativeStatus.Check(CudaDriver.cuDeviceGet(out int device, ordinal));
        Ordinal = device;
        Name = ReadName(device);
        ComputeCapability = new ComputeCapability(
            Attribute(device, CuDeviceAttribute.ComputeCapabilityMajor),
            Attribute(device, CuDeviceAttribute.ComputeCapabilityMinor));
        MultiprocessorCount = Attribute(device, CuDeviceAttribute.MultiprocessorCount);
        NativeStatus.Check(CudaDriver.cuDeviceTotalMem_v2(out nuint total, device));
        TotalMemoryBytes = (long)total;
        SharedMemoryPerBlockBytes = Attribute(device, CuDeviceAttribute.MaxSharedMemoryPerBlock);
        SharedMemoryPerBlockOptInBytes = Attribute(device, CuDeviceAttribute.MaxSharedMemoryPerBlockOptin);
        SharedMemoryPerMultiprocessorBytes = Attribute(device, CuDeviceAttribute.MaxSharedMemoryPerMultiprocessor);
        RegistersPerMultiprocessor = Attribute(device, CuDeviceAttribute.MaxRegistersPerMultiprocessor);
        MaxThreadsPerBlock = Attribute(device, CuDeviceAttribute.MaxThreadsPerBlock);
        MaxThreadsPerMultiprocessor = Attribute(device, CuDeviceAttribute.MaxThreadsPerMultiprocessor);
        WarpSize = Attribute(device, CuDeviceAttribute.WarpSize);
        L2CacheBytes = Attribute(device, CuDeviceAttribute.L2CacheSize);
        MemoryBusWidthBits = Attribute(device, CuDeviceAttribute.GlobalMemoryBusWidth);
        MemoryClockRateKHz = CudaDriver.cuDeviceGetAttribute(out int memoryClock, CuDeviceAttribute.MemoryClockRate, device) == CuResult.Success
            ? memoryClock : 0;
    }

    /// <summary>Device ordinal (0-based, as <c>CUDA_VISIBLE_DEVICES</c> numbers them).</summary>
    public int Ordinal { get; }

    /// <summary>Marketing name, e.g. "NVIDIA H100 80GB HBM3".</summary>
    public string Name { get; }

    /// <summary>Compute capability, e.g. 9.0.</summary>
    public ComputeCapability ComputeCapability { get; }

    /// <summary>Streaming multiprocessors.</summary>
    public int MultiprocessorCount { get; }

    /// <summary>Global memory in bytes.</summary>
    public long TotalMemoryBytes { get; }

    /// <summary>Shared memory a block may use without opting in (48 KiB on current GPUs).</summary>
    public int SharedMemoryPerBlockBytes { get; }

    /// <summary>Shared memory a block may use after <see cref="CudaKernel.SetMaxDynamicSharedMemory"/> (opt-in), e.g. 227 KiB on H100.</summary>
    public int SharedMemoryPerBlockOptInBytes { get; }

    /// <summary>Shared memory per multiprocessor.</summary>
    public int SharedMemoryPerMultiprocessorBytes { get; }

    /// <summary>32-bit registers per multiprocessor.</summary>
    public int RegistersPerMultiprocessor { get; }

    /// <summary>Largest block size.</summary>
    public int MaxThreadsPerBlock { get; }

    /// <summary>Resident threads per multiprocessor.</summary>
    public int MaxThreadsPerMultiprocessor { get; }

    /// <summary>Threads per warp (32).</summary>
    public int WarpSize { get; }

    /// <summary>L2 cache in bytes.</summary>
    public int L2CacheBytes { get; }

    /// <summary>Memory bus width in bits.</summary>
    public int MemoryBusWidthBits { get; }

    /// <summary>
    /// Peak memory clock in kHz as the driver reports it (0 when it does not); with <see cref="MemoryBusWidthBits"/>
    /// it gives the theoretical DRAM bandwidth, <c>2 · clock · width / 8</c> (double data rate).
    /// </summary>
    public int MemoryClockRateKHz { get; }

    /// <summary>Number of CUDA devices; 0 when the driver reports no device.</summary>
    /// <exception cref="DllNotFoundException">The CUDA driver library cannot be loaded (the message says what was tried).</exception>
    /// <exception cref="CudaException">The driver failed to initialise for another reason than having no device.</exception>
    public static int Count
    {
        get
        {
            CuResult init = CudaDriverInit.Result();
            if (init == CuResult.NoDevice)
            {
                return 0;
            }
            NativeStatus.Check(init, "cuInit(0)");
            NativeStatus.Check(CudaDriver.cuDeviceGetCount(out int count));
            return count;
        }
    }

    /// <summary>The driver's CUDA version, e.g. 12040 for 12.4.</summary>
    /// <exception cref="DllNotFoundException">The CUDA driver library cannot be loaded.</exception>
    /// <exception cref="CudaException">The driver call failed.</exception>
    public static int DriverVersion
    {
        get
        {
            NativeLibraries.Require(NativeLibraryId.CudaDriver);
            NativeStatus.Check(CudaDriver.cuDriverGetVersion(out int version));
            return version;
        }
    }

    /// <summary>The device with the given ordinal.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="ordinal"/> is negative or not below <see cref="Count"/>.</exception>
    /// <exception cref="DllNotFoundException">The CUDA driver library cannot be loaded.</exception>
    /// <exception cref="CudaException">The driver failed to initialise or to answer.</exception>
    public static CudaDevice Get(int ordinal)
    {
        int count = Count;
        if ((uint)ordinal >= (uint)count)
        {
            throw new ArgumentOutOfRangeException(nameof(ordinal), ordinal,
                count == 0 ? "No CUDA device is present." : $"Device ordinal must be in [0, {count - 1}].");
        }
        return new CudaDevice(ordinal);
    }

    /// <summary>Every device, in ordinal order (empty when there is none).</summary>
    /// <exception cref="DllNotFoundException">The CUDA driver library cannot be loaded.</exception>
    /// <exception cref="CudaException">The driver failed to initialise or to answer.</exception>
    public static IReadOnlyList<CudaDevice> GetAll()
    {
        int count = Count;
        var devices = new CudaDevice[count];
        for (int i = 0; i < count; i++)
        {
            devices[i] = new CudaDevice(i);
        }
        return devices;
    }

    /// <summary>e.g. "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.2 GiB)".</summary>
    public override string ToString() =>
        $"{Name} ({ComputeCapability.SmName}, {MultiprocessorCount} SMs, {TotalMemoryBytes / (1024.0 * 1024 * 1024):F1} GiB)";

    private static int Attribute(int device, CuDeviceAttribute attribute)
    {
        NativeStatus.Check(CudaDriver.cuDeviceGetAttribute(out int value, attribute, device));
        return value;
    }

    private static unsafe string ReadName(int device)
    {
        byte* name = stackalloc byte[256];
        NativeStatus.Check(CudaDriver.cuDeviceGetName(name, 256, device));
        return NativeText.FromUtf8((nint)name) ?? "";
    }
}

/// <summary>Calls cuInit once per process and remembers its result.</summary>
internal static class CudaDriverInit
{
    private static readonly Lazy<CuResult> s_result = new(() => CudaDriver.cuInit(0));

    /// <summary>cuInit's result.</summary>
    /// <exception cref="DllNotFoundException">The CUDA driver library cannot be loaded.</exception>
    public static CuResult Result()
    {
        NativeLibraries.Require(NativeLibraryId.CudaDriver);
        return s_result.Value;
    }

    /// <summary>Throws unless the driver initialised.</summary>
    /// <exception cref="DllNotFoundException">The CUDA driver library cannot be loaded.</exception>
    /// <exception cref="CudaException">cuInit failed.</exception>
    public static void Ensure() => NativeStatus.Check(Result(), "cuInit(0)");
}
