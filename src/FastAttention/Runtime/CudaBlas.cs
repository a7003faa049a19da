// cuBLAS GEMMs (fp32, fp16, bf16 inputs; fp32 compute) over row-major device buffers, bound to a context and a stream.
using FastAttention.Compilation;
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>
/// A cuBLAS handle. GEMMs here are <b>row-major</b> (as the rest of the library):
/// <c>C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C</c>, with fp32 accumulation for every element type.
/// Calls are queued on <see cref="Stream"/> and return without waiting.
/// </summary>
public sealed class CudaBlas : IDisposable
{
    private readonly CudaResourceHandle _handle;
    private CudaStream? _stream;

    private CudaBlas(CudaContext context, CudaResourceHandle handle)
    {
        Context = context;
        _handle = handle;
    }

    /// <summary>The context.</summary>
    public CudaContext Context { get; }

    /// <summary>The stream GEMMs are queued on (null: the legacy default stream).</summary>
    public CudaStream? Stream => _stream;

    /// <summary>Creates a cuBLAS handle in <paramref name="context"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="DllNotFoundException">cuBLAS cannot be loaded (the message says what was tried).</exception>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CublasException">cuBLAS failed to initialise.</exception>
    public static CudaBlas Create(CudaContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        NativeLibraries.Require(NativeLibraryId.Cublas);
        var handle = context.Own(CudaResourceKind.CublasHandle, () =>
        {
            NativeStatus.Check(Cublas.cublasCreate_v2(out nint blas));
            return blas;
        });
        return new CudaBlas(context, handle);
    }

    /// <summary>cuBLAS's version, e.g. 120402.</summary>
    /// <exception cref="ObjectDisposedException">The handle was disposed.</exception>
    /// <exception cref="CublasException">cuBLAS failed.</exception>
    public int Version
    {
        get
        {
            NativeStatus.Check(Cublas.cublasGetVersion_v2(Bind(), out int version));
            return version;
        }
    }

    /// <summary>Queues later GEMMs on <paramref name="stream"/> (null: the legacy default stream).</summary>
    /// <exception cref="ArgumentException">The stream belongs to another context.</exception>
    /// <exception cref="ObjectDisposedException">The handle or the stream was disposed.</exception>
    /// <exception cref="CublasException">cuBLAS failed.</exception>
    public void SetStream(CudaStream? stream)
    {
        if (stream is not null)
        {
            Context.RequireSame(stream.Context, nameof(stream));
        }
        NativeStatus.Check(Cublas.cublasSetStream_v2(Bind(), stream?.Handle ?? 0));
        _stream = stream;
    }

    /// <summary>
    /// Row-major <c>C = alpha · op(A) · op(B) + beta · C</c> with <c>op(A)</c> <c>[m, k]</c>, <c>op(B)</c> <c>[k, n]</c>,
    /// <c>C</c> <c>[m, n]</c>; leading dimensions are row strides in elements.
    /// </summary>
    /// <typeparam name="T">float, Half or BFloat16 (accumulation is fp32).</typeparam>
    /// <exception cref="ArgumentNullException">A buffer is null.</exception>
    /// <exception cref="ArgumentException">The element type is unsupported, a size or leading dimension is inconsistent, a buffer is too short, or belongs to another context.</exception>
    /// <exception cref="ObjectDisposedException">The handle or a buffer was disposed.</exception>
    /// <exception cref="CublasException">cuBLAS rejected the call.</exception>
    public void Gemm<T>(bool transposeA, bool transposeB, int m, int n, int k, float alpha,
        DeviceBuffer<T> a, int lda, DeviceBuffer<T> b, int ldb, float beta, DeviceBuffer<T> c, int ldc) where T : unmanaged =>
        GemmStridedBatched(transposeA, transposeB, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, batchCount: 1);

    /// <summary>
    /// <paramref name="batchCount"/> row-major GEMMs as in <see cref="Gemm{T}"/>; GEMM <c>i</c> reads A at element
    /// <c>i · strideA</c>, B at <c>i · strideB</c> and writes C at <c>i · strideC</c>.
    /// </summary>
    /// <typeparam name="T">float, Half or BFloat16 (accumulation is fp32).</typeparam>
    /// <exception cref="ArgumentNullException">A buffer is null.</exception>
    /// <exception cref="ArgumentException">The element type is unsupported, a size, stride or leading dimension is inconsistent, a buffer is too short, or belongs to another context.</exception>
    /// <exception cref="ObjectDisposedException">The handle or a buffer was disposed.</exception>
    /// <exception cref="CublasException">cuBLAS rejected the call.</exception>
    public unsafe void GemmStridedBatched<T>(bool transposeA, bool transposeB, int m, int n, int k, float alpha,
        DeviceBuffer<T> a, int lda, long strideA, DeviceBuffer<T> b, int ldb, long strideB,
        float beta, DeviceBuffer<T> c, int ldc, long strideC, int batchCount) where T : unmanaged
    {
        CudaDataType type = DataType<T>();
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchCount);
        // Row-major shapes as stored: A is [m, k] or [k, m] when transposed; B is [k, n] or [n, k].
        CheckOperand(a, nameof(a), transposeA ? k : m, transposeA ? m : k, lda, strideA, batchCount);
        CheckOperand(b, nameof(b), transposeB ? n : k, transposeB ? k : n, ldb, strideB, batchCount);
        CheckOperand(c, nameof(c), m, n, ldc, strideC, batchCount);
        if (strideC == 0 && batchCount > 1)
        {
            throw new ArgumentException("strideC is 0 with several GEMMs: outputs would overlap.", nameof(strideC));
        }
        nint blas = Bind();
        // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands, keep the flags.
        CublasOperation opA = transposeA ? CublasOperation.Transpose : CublasOperation.None;
        CublasOperation opB = transposeB ? CublasOperation.Transpose : CublasOperation.None;
        if (batchCount == 1)
        {
            NativeStatus.Check(Cublas.cublasGemmEx(blas, opB, opA, n, m, k, &alpha,
                b.DevicePointer, type, ldb, a.DevicePointer, type, lda,
                &beta, c.DevicePointer, type, ldc, CublasComputeType.Compute32F, Cublas.GemmDefault));
        }
        else
        {
            NativeStatus.Check(Cublas.cublasGemmStridedBatchedEx(blas, opB, opA, n, m, k, &alpha,
                b.DevicePointer, type, ldb, strideB, a.DevicePointer, type, lda, strideA,
                &beta, c.DevicePointer, type, ldc, strideC, batchCount, CublasComputeType.Compute32F, Cublas.GemmDefault));
        }
    }

    /// <summary>Destroys the handle.</summary>
    public void Dispose() => _handle.Dispose();

    private nint Bind()
    {
        nint blas = _handle.Get(this);
        Context.MakeCurrent();
        return blas;
    }

    private void CheckOperand<T>(DeviceBuffer<T> buffer, string name, int rows, int columns, int leading, long stride, int batchCount)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(buffer, name);
        Context.RequireSame(buffer.Context, name);
        if (leading < Math.Max(1, columns))
        {
            throw new ArgumentException($"Leading dimension of {name} is {leading}; its stored rows have {columns} elements, so it must be at least {Math.Max(1, columns)}.", name);
        }
        if (stride < 0)
        {
            throw new ArgumentException($"The batch stride of {name} is negative ({stride}).", name);
        }
        long needed = rows == 0 || columns == 0 ? 0 : (long)(batchCount - 1) * stride + (long)(rows - 1) * leading + columns;
        if (buffer.Length < needed)
        {
            throw new ArgumentException($"{name} has {buffer.Length} elements; {batchCount} matrices of {rows} x {columns} (leading dimension {leading}, stride {stride}) need {needed}.", name);
        }
    }

    private static CudaDataType DataType<T>() => KernelElementTypes.Of<T>() switch
    {
        KernelElementType.Float32 => CudaDataType.R32F,
        KernelElementType.Float16 => CudaDataType.R16F,
        _ => CudaDataType.R16BF,
    };
}
