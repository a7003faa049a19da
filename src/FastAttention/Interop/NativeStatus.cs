// The one status check for every native call: CUDA driver, NVRTC and cuBLAS results become exceptions that name the call.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Interop;

/// <summary>
/// Checks native status codes. The failing call expression is captured with
/// <see cref="CallerArgumentExpressionAttribute"/>, so <c>Check(CudaDriver.cuMemAlloc_v2(out p, n))</c> reports
/// exactly that call.
/// </summary>
internal static class NativeStatus
{
    /// <summary>Throws unless <paramref name="result"/> is CUDA_SUCCESS.</summary>
    /// <exception cref="CudaException">The call failed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Check(CuResult result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result != CuResult.Success)
        {
            throw CudaError(result, call);
        }
    }

    /// <summary>Throws unless <paramref name="result"/> is NVRTC_SUCCESS.</summary>
    /// <exception cref="NvrtcCompilationException">The call failed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Check(NvrtcResult result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result != NvrtcResult.Success)
        {
            throw new NvrtcCompilationException(NvrtcErrorName(result), call, log: "", options: []);
        }
    }

    /// <summary>Throws unless <paramref name="status"/> is CUBLAS_STATUS_SUCCESS.</summary>
    /// <exception cref="CublasException">The call failed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Check(CublasStatus status, [CallerArgumentExpression(nameof(status))] string call = "")
    {
        if (status != CublasStatus.Success)
        {
            throw CublasError(status, call);
        }
    }

    /// <summary>The exception for a failed driver call (also used where the caller adds detail, e.g. a JIT log).</summary>
    public static CudaException CudaError(CuResult result, string call, string? detail = null)
    {
        string name = DriverString(CudaDriver.cuGetErrorName, result) ?? $"CUDA_ERROR_{(int)result}";
        string description = DriverString(CudaDriver.cuGetErrorString, result) ?? "unrecognized error code";
        return new CudaException((int)result, name, description, call, detail);
    }

    /// <summary>NVRTC's name for <paramref name="result"/> (e.g. NVRTC_ERROR_COMPILATION).</summary>
    public static string NvrtcErrorName(NvrtcResult result)
    {
        try
        {
            return NativeText.FromUtf8(Nvrtc.nvrtcGetErrorString(result)) ?? $"NVRTC_ERROR_{(int)result}";
        }
        catch (DllNotFoundException)
        {
            return $"NVRTC_ERROR_{(int)result}";
        }
    }

    private static CublasException CublasError(CublasStatus status, string call)
    {
        string? name = null, description = null;
        try
        {
            name = NativeText.FromUtf8(Cublas.cublasGetStatusName(status));
            description = NativeText.FromUtf8(Cublas.cublasGetStatusString(status));
        }
        catch (EntryPointNotFoundException)
        {
            // cuBLAS before 11.4.2 has no status strings; the code alone is reported.
        }
        return new CublasException((int)status, name ?? $"CUBLAS_STATUS_{status}".ToUpperInvariant(), description ?? "", call);
    }

    private delegate CuResult DriverStringGetter(CuResult error, out nint text);

    private static string? DriverString(DriverStringGetter getter, CuResult result)
    {
        try
        {
            return getter(result, out nint text) == CuResult.Success ? NativeText.FromUtf8(text) : null;
        }
        catch (DllNotFoundException)
        {
            return null;
        }
    }
}

/// <summary>UTF-8 text crossing the native boundary: C strings out, arrays of C strings in.</summary>
internal static unsafe class NativeText
{
    /// <summary>A C string owned by the library (not freed here), or null for a null pointer.</summary>
    public static string? FromUtf8(nint text) => text == 0 ? null : Marshal.PtrToStringUTF8(text);

    /// <summary>
    /// A NUL-terminated UTF-8 <c>const char* const*</c> array allocated in native memory, for the lifetime
    /// of the returned object.
    /// </summary>
    public sealed class Utf8Array : IDisposable
    {
        private byte** _pointers;
        private readonly int _count;

        public Utf8Array(IReadOnlyList<string> strings)
        {
            _count = strings.Count;
            _pointers = (byte**)NativeMemory.AllocZeroed((nuint)Math.Max(1, _count), (nuint)sizeof(byte*));
            for (int i = 0; i < _count; i++)
            {
                _pointers[i] = (byte*)Marshal.StringToCoTaskMemUTF8(strings[i]);
            }
        }

        /// <summary>The array (never null, even when empty).</summary>
        public byte** Pointer => _pointers;

        /// <summary>Number of strings.</summary>
        public int Count => _count;

        public void Dispose()
        {
            if (_pointers == null) return;
            for (int i = 0; i < _count; i++)
            {
                Marshal.FreeCoTaskMem((nint)_pointers[i]);
            }
            NativeMemory.Free(_pointers);
            _pointers = null;
        }
    }
}
