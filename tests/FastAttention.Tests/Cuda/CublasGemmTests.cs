// GPU-only: cuBLAS GEMM (fp32, fp16, bf16 inputs, fp32 compute), row-major, with transposes and strided batches,
// against a CPU GEMM in double over the same (rounded) inputs.
using FastAttention.Compilation;
using FastAttention.Runtime;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Cuda;

[TestFixture]
[Category("Gpu")]
public sealed class CublasGemmTests : GpuFixture
{
    private CudaBlas _blas = null!;
    private CudaStream _stream = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        try
        {
            _blas = CudaBlas.Create(Context);
        }
        catch (DllNotFoundException e)
        {
            Assert.Ignore($"cuBLAS is not available: {e.Message}");
        }
        _stream = CudaStream.Create(Context);
        _blas.SetStream(_stream);
        TestContext.Out.WriteLine($"cuBLAS {_blas.Version} on {Context.Device}");
    }

    [OneTimeTearDown]
    public void TearDown()
    {
        _blas?.Dispose();
        _stream?.Dispose();
    }

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (var type in new[] { KernelElementType.Float32, KernelElementType.Float16, KernelElementType.BFloat16 })
        foreach (var (m, n, k) in new[] { (64, 48, 32), (17, 33, 129), (1, 5, 7) })
        foreach (bool ta in new[] { false, true })
        foreach (bool tb in new[] { false, true })
        {
            yield return new TestCaseData(type, m, n, k, ta, tb).SetName($"{type} {m}x{n}x{k} tA={ta} tB={tb}");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void GemmMatchesTheCpu(KernelElementType type, int m, int n, int k, bool transposeA, bool transposeB)
    {
        switch (type)
        {
            case KernelElementType.Float32: Check<float>(m, n, k, transposeA, transposeB, batch: 1); break;
            case KernelElementType.Float16: Check<Half>(m, n, k, transposeA, transposeB, batch: 1); break;
            default: Check<BFloat16>(m, n, k, transposeA, transposeB, batch: 1); break;
        }
    }

    [TestCase(KernelElementType.Float32)]
    [TestCase(KernelElementType.Float16)]
    [TestCase(KernelElementType.BFloat16)]
    public void StridedBatchedGemmMatchesTheCpu(KernelElementType type)
    {
        switch (type)
        {
            case KernelElementType.Float32: Check<float>(24, 40, 56, false, true, batch: 3); break;
            case KernelElementType.Float16: Check<Half>(24, 40, 56, false, true, batch: 3); break;
            default: Check<BFloat16>(24, 40, 56, false, true, batch: 3); break;
        }
    }

    [Test]
    public void InconsistentArgumentsAreRejectedBeforeCuBlas()
    {
        using var a = DeviceBuffer<float>.Allocate(Context, 16);
        using var b = DeviceBuffer<float>.Allocate(Context, 16);
        using var c = DeviceBuffer<float>.Allocate(Context, 16);
        Assert.That(() => _blas.Gemm(false, false, 4, 4, 4, 1f, a, 3, b, 4, 0f, c, 4), Throws.ArgumentException.With.Message.Contains("Leading dimension of a"));
        Assert.That(() => _blas.Gemm(false, false, 4, 4, 5, 1f, a, 5, b, 4, 0f, c, 4), Throws.ArgumentException.With.Message.Contains("a has 16 elements"));
        using var ints = DeviceBuffer<int>.Allocate(Context, 16);
        Assert.That(() => _blas.Gemm(false, false, 4, 4, 4, 1f, ints, 4, ints, 4, 0f, ints, 4), Throws.ArgumentException.With.Message.Contains("Int32"));
    }

    private void Check<T>(int m, int n, int k, bool transposeA, bool transposeB, int batch) where T : unmanaged
    {
        const float alpha = 0.75f, beta = -0.5f;
        // Stored shapes (row-major) with padded leading dimensions, to exercise lda/ldb/ldc.
        int aRows = transposeA ? k : m, aCols = transposeA ? m : k, lda = aCols + 3;
        int bRows = transposeB ? n : k, bCols = transposeB ? k : n, ldb = bCols + 1;
        int ldc = n + 2;
        long strideA = (long)aRows * lda, strideB = (long)bRows * ldb, strideC = (long)m * ldc;
        T[] aHost = GpuRuntimeTests.RandomArray<T>((int)(strideA * batch), 1);
        T[] bHost = GpuRuntimeTests.RandomArray<T>((int)(strideB * batch), 2);
        T[] cHost = GpuRuntimeTests.RandomArray<T>((int)(strideC * batch), 3);
        using var a = DeviceBuffer<T>.FromSpan(Context, aHost);
        using var b = DeviceBuffer<T>.FromSpan(Context, bHost);
        using var c = DeviceBuffer<T>.FromSpan(Context, cHost);
        if (batch == 1)
            _blas.Gemm(transposeA, transposeB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        else
            _blas.GemmStridedBatched(transposeA, transposeB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch);
        _stream.Synchronize();
        T[] result = c.ToArray();

        double eps = typeof(T) == typeof(float) ? 0 : typeof(T) == typeof(Half) ? Math.Pow(2, -10) : Math.Pow(2, -7);
        for (int p = 0; p < batch; p++)
        {
            for (int i = 0; i < m; i++)
            {
                for (int j = 0; j < n; j++)
                {
                    double sum = 0, magnitude = 0;
                    for (int q = 0; q < k; q++)
                    {
                        double av = Num.ToFloat(aHost[p * strideA + (transposeA ? q * lda + i : i * lda + q)]);
                        double bv = Num.ToFloat(bHost[p * strideB + (transposeB ? j * ldb + q : q * ldb + j)]);
                        sum += av * bv;
                        magnitude += Math.Abs(av * bv);
                    }
                    long ci = p * strideC + i * ldc + j;
                    double expected = alpha * sum + beta * Num.ToFloat(cHost[ci]);
                    double actual = Num.ToFloat(result[ci]);
                    // fp32 accumulation error, plus the final rounding to a 16-bit type.
                    double allowed = 1e-5 * (magnitude + 1) + eps * Math.Abs(expected);
                    if (Math.Abs(actual - expected) > allowed)
                    {
                        Assert.Fail($"{typeof(T).Name} C[{p}][{i},{j}] = {actual}, CPU {expected}, error {Math.Abs(actual - expected):g3} > {allowed:g3}");
                    }
                }
            }
            for (int j = n; j < ldc; j++)
            {
                Assert.That(result[p * strideC + j], Is.EqualTo(cHost[p * strideC + j]), "padding beyond n is untouched");
            }
        }
    }
}
