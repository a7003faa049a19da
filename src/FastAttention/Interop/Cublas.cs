// [LibraryImport] bindings to cuBLAS (cublas_api.h, _v2 entry points): handles, streams, GemmEx and strided-batched GemmEx.
using System.Runtime.InteropServices;

namespace FastAttention.Interop;

/// <summary>cublasStatus_t.</summary>
internal enum CublasStatus
{
    Success = 0,
    NotInitialized = 1,
    AllocFailed = 3,
    InvalidValue = 7,
    ArchMismatch = 8,
    MappingError = 11,
    ExecutionFailed = 13,
    InternalError = 14,
    NotSupported = 15,
    LicenseError = 16,
}

/// <summary>cublasOperation_t.</summary>
internal enum CublasOperation
{
    None = 0,
    Transpose = 1,
}

/// <summary>cudaDataType_t (library_types.h) values for the element types attention uses.</summary>
internal enum CudaDataType
{
    R32F = 0,
    R16F = 2,
    R16BF = 14,
}

/// <summary>cublasComputeType_t.</summary>
internal enum CublasComputeType
{
    Compute32F = 68,
}

/// <summary>The cuBLAS entry points the runtime layer uses. Matrices are column-major, as cuBLAS defines them.</summary>
internal static unsafe partial class Cublas
{
    /// <summary>CUBLAS_GEMM_DEFAULT.</summary>
    public const int GemmDefault = -1;

    [LibraryImport(NativeLibraries.Cublas)] public static partial CublasStatus cublasCreate_v2(out nint handle);
    [LibraryImport(NativeLibraries.Cublas)] public static partial CublasStatus cublasDestroy_v2(nint handle);
    [LibraryImport(NativeLibraries.Cublas)] public static partial CublasStatus cublasGetVersion_v2(nint handle, out int version);
    /// <summary>cublasGetProperty(libraryPropertyType: MAJOR_VERSION = 0, MINOR_VERSION = 1, PATCH_LEVEL = 2, value): no handle (and no GPU) needed.</summary>
    [LibraryImport(NativeLibraries.Cublas)] public static partial CublasStatus cublasGetProperty(int type, out int value);
    [LibraryImport(NativeLibraries.Cublas)] public static partial CublasStatus cublasSetStream_v2(nint handle, nint stream);
    [LibraryImport(NativeLibraries.Cublas)] public static partial nint cublasGetStatusName(CublasStatus status);
    [LibraryImport(NativeLibraries.Cublas)] public static partial nint cublasGetStatusString(CublasStatus status);

    [LibraryImport(NativeLibraries.Cublas)]
    public static partial CublasStatus cublasGemmEx(nint handle, CublasOperation transA, CublasOperation transB, int m, int n, int k,
        void* alpha, nint a, CudaDataType aType, int lda, nint b, CudaDataType bType, int ldb,
        void* beta, nint c, CudaDataType cType, int ldc, CublasComputeType computeType, int algorithm);

    [LibraryImport(NativeLibraries.Cublas)]
    public static partial CublasStatus cublasGemmStridedBatchedEx(nint handle, CublasOperation transA, CublasOperation transB, int m, int n, int k,
        void* alpha, nint a, CudaDataType aType, int lda, long strideA, nint b, CudaDataType bType, int ldb, long strideB,
        void* beta, nint c, CudaDataType cType, int ldc, long strideC, int batchCount, CublasComputeType computeType, int algorithm);
}
