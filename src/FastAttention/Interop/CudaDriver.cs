// [LibraryImport] bindings to the CUDA driver API (cuda.h), with the _v2 entry points the header maps to.
using System.Runtime.InteropServices;

namespace FastAttention.Interop;

/// <summary>CUresult values the library tests for by name; every other value is reported through cuGetErrorName.</summary>
internal enum CuResult
{
    Success = 0,
    InvalidValue = 1,
    OutOfMemory = 2,
    NotInitialized = 3,
    Deinitialized = 4,
    StubLibrary = 34,
    NoDevice = 100,
    InvalidDevice = 101,
    InvalidImage = 200,
    InvalidContext = 201,
    NoBinaryForGpu = 209,
    InvalidPtx = 218,
    UnsupportedPtxVersion = 222,
    InvalidHandle = 400,
    NotFound = 500,
    NotReady = 600,
    IllegalAddress = 700,
    LaunchOutOfResources = 701,
    LaunchFailed = 719,
    NotSupported = 801,
    Unknown = 999,
}

/// <summary>CUdevice_attribute values used by <see cref="Runtime.CudaDevice"/>.</summary>
internal enum CuDeviceAttribute
{
    MaxThreadsPerBlock = 1,
    MaxSharedMemoryPerBlock = 8,
    WarpSize = 10,
    MaxRegistersPerBlock = 12,
    MultiprocessorCount = 16,
    MemoryClockRate = 36,
    GlobalMemoryBusWidth = 37,
    L2CacheSize = 38,
    MaxThreadsPerMultiprocessor = 39,
    UnifiedAddressing = 41,
    ComputeCapabilityMajor = 75,
    ComputeCapabilityMinor = 76,
    MaxSharedMemoryPerMultiprocessor = 81,
    MaxRegistersPerMultiprocessor = 82,
    MaxSharedMemoryPerBlockOptin = 97,
}

/// <summary>CUfunction_attribute values.</summary>
internal enum CuFunctionAttribute
{
    MaxThreadsPerBlock = 0,
    SharedSizeBytes = 1,
    ConstSizeBytes = 2,
    LocalSizeBytes = 3,
    NumRegs = 4,
    PtxVersion = 5,
    BinaryVersion = 6,
    CacheModeCa = 7,
    MaxDynamicSharedSizeBytes = 8,
    PreferredSharedMemoryCarveout = 9,
}

/// <summary>CUjit_option values passed to cuModuleLoadDataEx.</summary>
internal enum CuJitOption
{
    InfoLogBuffer = 3,
    InfoLogBufferSizeBytes = 4,
    ErrorLogBuffer = 5,
    ErrorLogBufferSizeBytes = 6,
}

/// <summary>The CUDA driver API entry points the runtime layer uses. Handles are <see cref="nint"/>, sizes <see cref="nuint"/>.</summary>
internal static unsafe partial class CudaDriver
{
    /// <summary>CU_STREAM_NON_BLOCKING: the stream does not synchronise with the legacy default stream.</summary>
    public const uint StreamNonBlocking = 0x1;
    /// <summary>CU_STREAM_LEGACY ((CUstream)0x1): the legacy default stream, the one the synchronous copies and memsets use.</summary>
    public const nint StreamLegacy = 0x1;
    /// <summary>CU_EVENT_DISABLE_TIMING.</summary>
    public const uint EventDisableTiming = 0x2;
    /// <summary>CU_MEMHOSTALLOC_PORTABLE: pinned memory usable from every context.</summary>
    public const uint MemHostAllocPortable = 0x1;

    // Initialisation, version, errors
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuInit(uint flags);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuDriverGetVersion(out int driverVersion);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuGetErrorName(CuResult error, out nint name);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuGetErrorString(CuResult error, out nint description);

    // Devices
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuDeviceGetCount(out int count);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuDeviceGet(out int device, int ordinal);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuDeviceGetName(byte* name, int length, int device);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuDeviceGetAttribute(out int value, CuDeviceAttribute attribute, int device);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuDeviceTotalMem_v2(out nuint bytes, int device);

    // Primary context and the calling thread's current context
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuDevicePrimaryCtxRetain(out nint context, int device);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuDevicePrimaryCtxRelease_v2(int device);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuCtxGetCurrent(out nint context);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuCtxSetCurrent(nint context);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuCtxPushCurrent_v2(nint context);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuCtxPopCurrent_v2(out nint context);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuCtxSynchronize();

    // Device memory
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemGetInfo_v2(out nuint free, out nuint total);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemAlloc_v2(out nint devicePointer, nuint bytes);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemFree_v2(nint devicePointer);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemsetD8_v2(nint devicePointer, byte value, nuint count);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemsetD8Async(nint devicePointer, byte value, nuint count, nint stream);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemsetD32_v2(nint devicePointer, uint value, nuint count);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemsetD32Async(nint devicePointer, uint value, nuint count, nint stream);

    // Pinned host memory
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemHostAlloc(out nint hostPointer, nuint bytes, uint flags);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemFreeHost(nint hostPointer);

    // Copies (byte counts)
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemcpyHtoD_v2(nint destination, void* source, nuint bytes);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemcpyDtoH_v2(void* destination, nint source, nuint bytes);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemcpyDtoD_v2(nint destination, nint source, nuint bytes);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemcpyHtoDAsync_v2(nint destination, void* source, nuint bytes, nint stream);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemcpyDtoHAsync_v2(void* destination, nint source, nuint bytes, nint stream);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuMemcpyDtoDAsync_v2(nint destination, nint source, nuint bytes, nint stream);

    // Streams
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuStreamCreate(out nint stream, uint flags);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuStreamDestroy_v2(nint stream);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuStreamSynchronize(nint stream);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuStreamQuery(nint stream);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuStreamWaitEvent(nint stream, nint @event, uint flags);

    // Events
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuEventCreate(out nint @event, uint flags);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuEventDestroy_v2(nint @event);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuEventRecord(nint @event, nint stream);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuEventSynchronize(nint @event);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuEventQuery(nint @event);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuEventElapsedTime(out float milliseconds, nint start, nint end);

    // Modules and functions
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuModuleLoadDataEx(out nint module, void* image, uint optionCount, CuJitOption* options, void** optionValues);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuModuleUnload(nint module);
    [LibraryImport(NativeLibraries.Cuda, StringMarshalling = StringMarshalling.Utf8)]
    public static partial CuResult cuModuleGetFunction(out nint function, nint module, string name);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuFuncGetAttribute(out int value, CuFunctionAttribute attribute, nint function);
    [LibraryImport(NativeLibraries.Cuda)] public static partial CuResult cuFuncSetAttribute(nint function, CuFunctionAttribute attribute, int value);

    // Launch
    [LibraryImport(NativeLibraries.Cuda)]
    public static partial CuResult cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedMemoryBytes, nint stream, void** kernelParams, void** extra);
}
