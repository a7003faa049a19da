// The binding contract, checked without a GPU: enum values and entry-point names as the CUDA 12 headers define them
// (cuda.h, nvrtc.h, cublas_api.h, library_types.h), and the parameter types of the size_t / CUdeviceptr / handle
// arguments. A wrong value here fails silently on a GPU (a wrong attribute, a wrong compute type), so pin them.
using System.Reflection;
using System.Runtime.InteropServices;
using FastAttention.Interop;

namespace FastAttention.Tests.Cuda;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class InteropContractTests
{
    [Test]
    public void DriverEnumValuesMatchCudaH()
    {
        // CUdevice_attribute
        Assert.That((int)CuDeviceAttribute.MaxThreadsPerBlock, Is.EqualTo(1));
        Assert.That((int)CuDeviceAttribute.MaxSharedMemoryPerBlock, Is.EqualTo(8));
        Assert.That((int)CuDeviceAttribute.WarpSize, Is.EqualTo(10));
        Assert.That((int)CuDeviceAttribute.MaxRegistersPerBlock, Is.EqualTo(12));
        Assert.That((int)CuDeviceAttribute.MultiprocessorCount, Is.EqualTo(16));
        Assert.That((int)CuDeviceAttribute.MemoryClockRate, Is.EqualTo(36));
        Assert.That((int)CuDeviceAttribute.GlobalMemoryBusWidth, Is.EqualTo(37));
        Assert.That((int)CuDeviceAttribute.L2CacheSize, Is.EqualTo(38));
        Assert.That((int)CuDeviceAttribute.MaxThreadsPerMultiprocessor, Is.EqualTo(39));
        Assert.That((int)CuDeviceAttribute.UnifiedAddressing, Is.EqualTo(41));
        Assert.That((int)CuDeviceAttribute.ComputeCapabilityMajor, Is.EqualTo(75));
        Assert.That((int)CuDeviceAttribute.ComputeCapabilityMinor, Is.EqualTo(76));
        Assert.That((int)CuDeviceAttribute.MaxSharedMemoryPerMultiprocessor, Is.EqualTo(81));
        Assert.That((int)CuDeviceAttribute.MaxRegistersPerMultiprocessor, Is.EqualTo(82));
        Assert.That((int)CuDeviceAttribute.MaxSharedMemoryPerBlockOptin, Is.EqualTo(97));

        // CUfunction_attribute: 0..9 in header order
        Assert.That(Enum.GetValues<CuFunctionAttribute>().Select(a => (int)a), Is.EqualTo(Enumerable.Range(0, 10)));
        Assert.That((int)CuFunctionAttribute.SharedSizeBytes, Is.EqualTo(1));
        Assert.That((int)CuFunctionAttribute.LocalSizeBytes, Is.EqualTo(3));
        Assert.That((int)CuFunctionAttribute.NumRegs, Is.EqualTo(4));
        Assert.That((int)CuFunctionAttribute.MaxDynamicSharedSizeBytes, Is.EqualTo(8));

        // CUjit_option
        Assert.That((int)CuJitOption.InfoLogBuffer, Is.EqualTo(3));
        Assert.That((int)CuJitOption.InfoLogBufferSizeBytes, Is.EqualTo(4));
        Assert.That((int)CuJitOption.ErrorLogBuffer, Is.EqualTo(5));
        Assert.That((int)CuJitOption.ErrorLogBufferSizeBytes, Is.EqualTo(6));

        // CUresult
        var results = new Dictionary<CuResult, int>
        {
            [CuResult.Success] = 0, [CuResult.InvalidValue] = 1, [CuResult.OutOfMemory] = 2, [CuResult.NotInitialized] = 3,
            [CuResult.Deinitialized] = 4, [CuResult.StubLibrary] = 34, [CuResult.NoDevice] = 100, [CuResult.InvalidDevice] = 101,
            [CuResult.InvalidImage] = 200, [CuResult.InvalidContext] = 201, [CuResult.NoBinaryForGpu] = 209, [CuResult.InvalidPtx] = 218,
            [CuResult.UnsupportedPtxVersion] = 222, [CuResult.InvalidHandle] = 400, [CuResult.NotFound] = 500, [CuResult.NotReady] = 600,
            [CuResult.IllegalAddress] = 700, [CuResult.LaunchOutOfResources] = 701, [CuResult.LaunchFailed] = 719,
            [CuResult.NotSupported] = 801, [CuResult.Unknown] = 999,
        };
        Assert.That(results.Keys, Is.EquivalentTo(Enum.GetValues<CuResult>()), "every CuResult is pinned");
        foreach (var (result, value) in results) Assert.That((int)result, Is.EqualTo(value), result.ToString());

        // Flags and special handles
        Assert.That(CudaDriver.StreamNonBlocking, Is.EqualTo(0x1u));
        Assert.That(CudaDriver.StreamLegacy, Is.EqualTo((nint)0x1), "CU_STREAM_LEGACY is ((CUstream)0x1)");
        Assert.That(CudaDriver.EventDisableTiming, Is.EqualTo(0x2u));
        Assert.That(CudaDriver.MemHostAllocPortable, Is.EqualTo(0x1u));
    }

    [Test]
    public void CublasAndNvrtcEnumValuesMatchTheirHeaders()
    {
        Assert.That((int)CudaDataType.R32F, Is.EqualTo(0));
        Assert.That((int)CudaDataType.R16F, Is.EqualTo(2));
        Assert.That((int)CudaDataType.R16BF, Is.EqualTo(14));
        Assert.That((int)CublasComputeType.Compute32F, Is.EqualTo(68));
        Assert.That((int)CublasOperation.None, Is.EqualTo(0));
        Assert.That((int)CublasOperation.Transpose, Is.EqualTo(1));
        Assert.That(Cublas.GemmDefault, Is.EqualTo(-1));
        var statuses = new Dictionary<CublasStatus, int>
        {
            [CublasStatus.Success] = 0, [CublasStatus.NotInitialized] = 1, [CublasStatus.AllocFailed] = 3, [CublasStatus.InvalidValue] = 7,
            [CublasStatus.ArchMismatch] = 8, [CublasStatus.MappingError] = 11, [CublasStatus.ExecutionFailed] = 13,
            [CublasStatus.InternalError] = 14, [CublasStatus.NotSupported] = 15, [CublasStatus.LicenseError] = 16,
        };
        Assert.That(statuses.Keys, Is.EquivalentTo(Enum.GetValues<CublasStatus>()));
        foreach (var (status, value) in statuses) Assert.That((int)status, Is.EqualTo(value), status.ToString());

        // nvrtcResult: 0..11 in header order
        Assert.That(Enum.GetValues<NvrtcResult>().Select(r => (int)r), Is.EqualTo(Enumerable.Range(0, 12)));
        Assert.That((int)NvrtcResult.Compilation, Is.EqualTo(6));
        Assert.That((int)NvrtcResult.InvalidOption, Is.EqualTo(5));
    }

    [Test]
    public void EnumsPassedByValueAreFourByteInts()
    {
        foreach (Type e in (Type[])[typeof(CuResult), typeof(CuDeviceAttribute), typeof(CuFunctionAttribute), typeof(CuJitOption),
                     typeof(NvrtcResult), typeof(CublasStatus), typeof(CublasOperation), typeof(CudaDataType), typeof(CublasComputeType)])
        {
            Assert.That(Enum.GetUnderlyingType(e), Is.EqualTo(typeof(int)), e.Name);
        }
    }

    [Test]
    public void DriverBindingsUseTheEntryPointsCudaHMapsTo()
    {
        // cuda.h: #define cuMemAlloc cuMemAlloc_v2 (and the others below). libcuda still exports the unversioned
        // symbols with their older ABI or semantics (32-bit sizes and pointers for the CUDA 3.1 memory API, the pre-4.0
        // destroy/push/pop behaviour), so binding a bare name loads fine and misbehaves.
        string[] mappedToV2 =
        [
            "cuDeviceTotalMem", "cuCtxCreate", "cuModuleGetGlobal", "cuMemGetInfo", "cuMemAlloc", "cuMemAllocPitch", "cuMemFree",
            "cuMemGetAddressRange", "cuMemAllocHost", "cuMemHostGetDevicePointer", "cuMemcpyHtoD", "cuMemcpyDtoH", "cuMemcpyDtoD",
            "cuMemcpyHtoDAsync", "cuMemcpyDtoHAsync", "cuMemcpyDtoDAsync", "cuMemsetD8", "cuMemsetD16", "cuMemsetD32",
            "cuCtxDestroy", "cuCtxPopCurrent", "cuCtxPushCurrent", "cuStreamDestroy", "cuEventDestroy", "cuMemHostRegister",
            "cuDevicePrimaryCtxRelease", "cuDevicePrimaryCtxReset", "cuDevicePrimaryCtxSetFlags", "cuLinkCreate", "cuLinkAddData",
        ];
        string[] names = EntryPoints(typeof(CudaDriver)).Keys.ToArray();
        Assert.That(names.Intersect(mappedToV2), Is.Empty, "bind the _v2 symbol cuda.h maps these names to");
        Assert.That(names, Does.Contain("cuMemAlloc_v2").And.Contain("cuMemcpyHtoDAsync_v2").And.Contain("cuDevicePrimaryCtxRelease_v2"));
        // Not remapped by cuda.h (no _v2 exists): these must keep their plain names.
        Assert.That(names, Does.Contain("cuMemHostAlloc").And.Contain("cuMemFreeHost").And.Contain("cuMemsetD8Async")
            .And.Contain("cuStreamCreate").And.Contain("cuEventRecord").And.Contain("cuLaunchKernel"));
        string[] cublasNames = EntryPoints(typeof(Cublas)).Keys.ToArray();
        Assert.That(cublasNames, Does.Contain("cublasCreate_v2").And.Contain("cublasDestroy_v2").And.Contain("cublasSetStream_v2"));
    }

    [Test]
    public void SizesPointersAndHandlesHaveTheirCWidths()
    {
        var driver = EntryPoints(typeof(CudaDriver));
        // size_t -> nuint, CUdeviceptr / handles -> nint (64-bit), CUdevice -> int, unsigned int -> uint.
        Expect(driver["cuMemAlloc_v2"], "nint&", "nuint");
        Expect(driver["cuMemFree_v2"], "nint");
        Expect(driver["cuMemGetInfo_v2"], "nuint&", "nuint&");
        Expect(driver["cuDeviceTotalMem_v2"], "nuint&", "int");
        Expect(driver["cuMemsetD8_v2"], "nint", "byte", "nuint");
        Expect(driver["cuMemsetD8Async"], "nint", "byte", "nuint", "nint");
        Expect(driver["cuMemsetD32_v2"], "nint", "uint", "nuint");
        Expect(driver["cuMemHostAlloc"], "nint&", "nuint", "uint");
        Expect(driver["cuMemcpyHtoD_v2"], "nint", "void*", "nuint");
        Expect(driver["cuMemcpyDtoH_v2"], "void*", "nint", "nuint");
        Expect(driver["cuMemcpyDtoD_v2"], "nint", "nint", "nuint");
        Expect(driver["cuMemcpyHtoDAsync_v2"], "nint", "void*", "nuint", "nint");
        Expect(driver["cuMemcpyDtoHAsync_v2"], "void*", "nint", "nuint", "nint");
        Expect(driver["cuDeviceGet"], "int&", "int");
        Expect(driver["cuDeviceGetName"], "byte*", "int", "int");
        Expect(driver["cuDeviceGetAttribute"], "int&", "CuDeviceAttribute", "int");
        Expect(driver["cuDevicePrimaryCtxRetain"], "nint&", "int");
        Expect(driver["cuDevicePrimaryCtxRelease_v2"], "int");
        Expect(driver["cuFuncGetAttribute"], "int&", "CuFunctionAttribute", "nint");
        Expect(driver["cuFuncSetAttribute"], "nint", "CuFunctionAttribute", "int");
        Expect(driver["cuModuleLoadDataEx"], "nint&", "void*", "uint", "CuJitOption*", "void**");
        Expect(driver["cuEventElapsedTime"], "float&", "nint", "nint");
        // cuLaunchKernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream, kernelParams, extra)
        Expect(driver["cuLaunchKernel"], "nint", "uint", "uint", "uint", "uint", "uint", "uint", "uint", "nint", "void**", "void**");

        var nvrtc = EntryPoints(typeof(Nvrtc));
        Expect(nvrtc["nvrtcCreateProgram"], "nint&", "string", "string", "int", "byte**", "byte**");
        Expect(nvrtc["nvrtcCompileProgram"], "nint", "int", "byte**");
        Expect(nvrtc["nvrtcDestroyProgram"], "nint&");
        Expect(nvrtc["nvrtcGetCUBINSize"], "nint", "nuint&");
        Expect(nvrtc["nvrtcGetProgramLogSize"], "nint", "nuint&");

        var cublas = EntryPoints(typeof(Cublas));
        // cublasGemmEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, computeType, algo)
        Expect(cublas["cublasGemmEx"], "nint", "CublasOperation", "CublasOperation", "int", "int", "int",
            "void*", "nint", "CudaDataType", "int", "nint", "CudaDataType", "int",
            "void*", "nint", "CudaDataType", "int", "CublasComputeType", "int");
        // ... and the strided form with long long strides after each leading dimension, batchCount before computeType.
        Expect(cublas["cublasGemmStridedBatchedEx"], "nint", "CublasOperation", "CublasOperation", "int", "int", "int",
            "void*", "nint", "CudaDataType", "int", "long", "nint", "CudaDataType", "int", "long",
            "void*", "nint", "CudaDataType", "int", "long", "int", "CublasComputeType", "int");
        Assert.That(IntPtr.Size, Is.EqualTo(8), "CUdeviceptr is 64-bit; the bindings assume a 64-bit process");
    }

    [Test]
    public void EveryBindingReturnsItsLibrarysStatusType()
    {
        Assert.That(EntryPoints(typeof(CudaDriver)).Values.Select(m => m.ReturnType).Distinct(), Is.EqualTo(new[] { typeof(CuResult) }));
        Assert.That(EntryPoints(typeof(Nvrtc)).Where(p => p.Key != "nvrtcGetErrorString").Select(p => p.Value.ReturnType).Distinct(),
            Is.EqualTo(new[] { typeof(NvrtcResult) }));
        Assert.That(EntryPoints(typeof(Cublas)).Where(p => !p.Key.StartsWith("cublasGetStatus", StringComparison.Ordinal))
            .Select(p => p.Value.ReturnType).Distinct(), Is.EqualTo(new[] { typeof(CublasStatus) }));
    }

    private static Dictionary<string, MethodInfo> EntryPoints(Type bindings) =>
        bindings.GetMethods(BindingFlags.Public | BindingFlags.Static)
            .Select(m => (Method: m, Import: m.GetCustomAttribute<LibraryImportAttribute>()))
            .Where(x => x.Import is not null)
            .ToDictionary(x => x.Import!.EntryPoint ?? x.Method.Name, x => x.Method);

    private static void Expect(MethodInfo method, params string[] parameterTypes) =>
        Assert.That(method.GetParameters().Select(p => TypeName(p.ParameterType)), Is.EqualTo(parameterTypes), method.Name);

    private static string TypeName(Type t) => t switch
    {
        { IsByRef: true } => TypeName(t.GetElementType()!) + "&",
        { IsPointer: true } => TypeName(t.GetElementType()!) + "*",
        _ when t == typeof(nint) => "nint",
        _ when t == typeof(nuint) => "nuint",
        _ when t == typeof(int) => "int",
        _ when t == typeof(uint) => "uint",
        _ when t == typeof(long) => "long",
        _ when t == typeof(byte) => "byte",
        _ when t == typeof(float) => "float",
        _ when t == typeof(void) => "void",
        _ when t == typeof(string) => "string",
        _ => t.Name,
    };
}
