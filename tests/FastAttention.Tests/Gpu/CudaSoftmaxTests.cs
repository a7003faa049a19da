// GPU fused softmax (CudaSoftmax, softmax.cu) against the CPU softmax and the double reference: every kernel
// (plain, warp, block, online) through row lengths 1 .. 20000, masks of every kind, fp32/fp16/bf16, huge logits,
// strided and in-place tensors, NaN at masked positions, and argument errors before any work. Ignored without a GPU.
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Cuda;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

public sealed class CudaSoftmaxTests : GpuFixture
{
    private CudaSoftmax _softmax = null!;

    [OneTimeSetUp]
    public void CreateSoftmax() => _softmax = new CudaSoftmax(Context);

    [OneTimeTearDown]
    public void DisposeSoftmax() => _softmax?.Dispose();

    // Row lengths cover every kernel and its edges: warp (<= 1024), block (<= 8192), online (> 8192).
    private static readonly (int B, int H, int Sq, int Sk, float Scale, string Mask)[] Shapes =
    [
        (2, 3, 17, 1, 1f, "none"),
        (2, 2, 9, 17, 0.5f, "causal"),
        (1, 4, 33, 113, 1f, "win(5,3)+klen"),
        (2, 2, 40, 203, 1.5f, "klen0+causal"),
        (2, 2, 64, 1023, 0.8f, "qlen+win(-1,2)"),
        (1, 2, 16, 1024, 1f, "randomh(16,64,4)"),
        (2, 2, 8, 1025, -0.7f, "causal+qlen0"),
        (1, 1, 8, 4097, 1f, "custom(4,128)"),
        (1, 1, 4, 8192, 1f, "none"),
        (1, 1, 4, 8193, 0.3f, "causal"),
        (2, 1, 3, 20000, 1f, "klen+win(3000,-1)"),
        (1, 2, 5, 33, 0f, "win(4,4)"),
    ];

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (CudaKernelVariant variant in new[] { CudaKernelVariant.Plain, CudaKernelVariant.Tuned })
            foreach (string dtype in new[] { "f32", "f16", "bf16" })
                for (int i = 0; i < Shapes.Length; i++)
                {
                    var s = Shapes[i];
                    yield return new TestCaseData(variant, dtype, i)
                        .SetName($"GpuSoftmax({variant} {dtype} [{s.B},{s.H},{s.Sq},{s.Sk}] scale={s.Scale} {s.Mask})");
                }
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesCpuAndReference(CudaKernelVariant variant, string dtype, int shapeIndex)
    {
        switch (dtype)
        {
            case "f32": Run<float>(variant, shapeIndex); break;
            case "f16": Run<Half>(variant, shapeIndex); break;
            default: Run<BFloat16>(variant, shapeIndex); break;
        }
    }

    private void Run<T>(CudaKernelVariant variant, int shapeIndex) where T : unmanaged
    {
        var (B, H, Sq, Sk, scale, spec) = Shapes[shapeIndex];
        ulong seed = 900 + (ulong)shapeIndex;
        var mask = MaskSpec.Build(spec, new AttentionShape(B, Sq, Sk, H, H, 1), seed);
        var scores = new Rng(seed).Normal<T>(B * H * Sq * Sk, 3.0);
        var gpu = RunGpu(scores, B, H, Sq, Sk, scale, mask, variant);
        SoftmaxChecks.AssertMatches(gpu, scores, B, H, Sq, Sk, scale, mask, "GPU", $"{variant} {Num.Name<T>()} {spec}");
    }

    [TestCase(CudaKernelVariant.Plain, "f32")]
    [TestCase(CudaKernelVariant.Tuned, "f32")]
    [TestCase(CudaKernelVariant.Plain, "f16")]
    [TestCase(CudaKernelVariant.Tuned, "f16")]
    [TestCase(CudaKernelVariant.Plain, "bf16")]
    [TestCase(CudaKernelVariant.Tuned, "bf16")]
    public void HugeLogitsStayFinite(CudaKernelVariant variant, string dtype)
    {
        switch (dtype)
        {
            case "f32": Huge<float>(variant); break;
            case "f16": Huge<Half>(variant); break;
            default: Huge<BFloat16>(variant); break;
        }
    }

    private void Huge<T>(CudaKernelVariant variant) where T : unmanaged
    {
        // Integer scores x 500: logits up to 1e4, exact in every precision; rows short (warp) and long (online).
        foreach (int sk in new[] { 71, 9000 })
        {
            const int B = 2, H = 2, Sq = 9;
            var scores = new Rng(7).Integers<T>(B * H * Sq * sk, -20, 20);
            var mask = new AttentionMask { Causal = true, KeyLengths = [sk, sk / 2] };
            var gpu = RunGpu(scores, B, H, Sq, sk, 500f, mask, variant);
            Tolerance.AssertNoNaN(gpu, "softmax of logits 1e4", [B, H, Sq, sk]);
            SoftmaxChecks.AssertMatches(gpu, scores, B, H, Sq, sk, 500f, mask, "GPU", $"{variant} {Num.Name<T>()} logits 1e4, Sk {sk}");
        }
        if (typeof(T) == typeof(float))
        {
            // Scores of magnitude 1e4 at unit scale: allow the fp32 rounding of the logit (condition number ~|x|).
            const int B = 1, H = 2, Sq = 5, Sk = 1500;
            var big = new Rng(8).Normal<float>(B * H * Sq * Sk, 1e4);
            var gpu = RunGpu(big, B, H, Sq, Sk, 1f, AttentionMask.CausalMask, variant);
            Tolerance.AssertNoNaN(gpu, "softmax of 1e4 scores", [B, H, Sq, Sk]);
            double maxLogit = big.Max(Math.Abs);
            var expected = ReferenceAttention.Softmax(big, B, H, Sq, Sk, 1.0, AttentionMask.CausalMask);
            Tolerance.AssertClose(gpu, expected, "GPU softmax fp32 scores ~1e4", [B, H, Sq, Sk], rel: Tolerance.Fp32Rel + 8 * maxLogit * Math.Pow(2, -24));
        }
    }

    [TestCase(CudaKernelVariant.Plain, 40)]
    [TestCase(CudaKernelVariant.Tuned, 40)]
    [TestCase(CudaKernelVariant.Tuned, 9001)]
    public void StridedScoresViewAndPaddedOutput(CudaKernelVariant variant, int Sk)
    {
        // Scores stored [B, Sq, H, Sk] viewed as [B, H, Sq, Sk]; output rows padded by 3 elements (not 16-byte aligned).
        const int B = 2, H = 3, Sq = 7;
        var bqhk = new Rng(12).Normal<Half>(B * Sq * H * Sk, 2.0);
        var bhqk = new Half[bqhk.Length];
        for (int b = 0; b < B; b++)
            for (int i = 0; i < Sq; i++)
                for (int h = 0; h < H; h++)
                    Array.Copy(bqhk, ((b * Sq + i) * H + h) * Sk, bhqk, ((b * H + h) * Sq + i) * Sk, Sk);
        int row = Sk + 3;
        using var x = DeviceBuffer<Half>.FromSpan(Context, bqhk);
        using var y = DeviceBuffer<Half>.FromSpan(Context, Enumerable.Repeat(Half.NaN, B * H * Sq * row).ToArray());
        using var xs = DeviceTensor<Half>.Wrap(Context, x.DevicePointer, [B, H, Sq, Sk], [Sq * H * Sk, Sk, H * Sk, 1]);
        using var ys = DeviceTensor<Half>.Wrap(Context, y.DevicePointer, [B, H, Sq, Sk], [H * Sq * row, Sq * row, row, 1]);
        var mask = new AttentionMask { Causal = true, KeyLengths = [Sk, Sk - 5] };
        _softmax.Variant = variant;
        _softmax.Run(xs, ys, 1.2f, mask);
        Context.Synchronize();
        var padded = y.ToArray();
        var gpu = new Half[bhqk.Length];
        for (int r = 0; r < B * H * Sq; r++)
        {
            Array.Copy(padded, r * row, gpu, r * Sk, Sk);
            for (int p = Sk; p < row; p++) Assert.That(Half.IsNaN(padded[r * row + p]), $"padding of row {r} untouched");
        }
        SoftmaxChecks.AssertMatches(Num.ToFloats<Half>(gpu), bhqk, B, H, Sq, Sk, 1.2f, mask, "GPU", $"{variant} strided view Sk {Sk}");
    }

    [TestCase(CudaKernelVariant.Plain, 77)]
    [TestCase(CudaKernelVariant.Tuned, 77)]
    [TestCase(CudaKernelVariant.Tuned, 3000)]
    [TestCase(CudaKernelVariant.Tuned, 10000)]
    public void InPlaceEqualsOutOfPlace(CudaKernelVariant variant, int Sk)
    {
        const int B = 2, H = 3, Sq = 10;
        var scores = new Rng(9).Normal<BFloat16>(B * H * Sq * Sk, 2.0);
        var mask = new AttentionMask { WindowLeft = 10, WindowRight = 4, KeyLengths = [Sk - 7, Sk], QueryLengths = [10, 6] };
        var outOfPlace = RunGpu(scores, B, H, Sq, Sk, 0.8f, mask, variant);
        using var t = DeviceTensor<BFloat16>.Allocate(Context, B, H, Sq, Sk);
        t.CopyFrom(scores);
        _softmax.Variant = variant;
        _softmax.Run(t, t, 0.8f, mask);
        var inPlace = new BFloat16[scores.Length];
        t.CopyTo(inPlace);
        Tolerance.AssertBitwiseEqual(Num.ToFloats<BFloat16>(inPlace), outOfPlace, $"{variant} in place vs out of place", [B, H, Sq, Sk]);
    }

    [TestCase(CudaKernelVariant.Plain)]
    [TestCase(CudaKernelVariant.Tuned)]
    public void MaskedPositionsHoldingNaNGiveZeroes(CudaKernelVariant variant)
    {
        foreach (int Sk in new[] { 30, 2000, 9000 })
        {
            const int B = 2, H = 2, Sq = 12;
            var scores = new Rng(10).Normal<float>(B * H * Sq * Sk);
            var mask = new AttentionMask { KeyLengths = [Sk - 5, Sk], QueryLengths = [12, 7], Causal = true, WindowLeft = 20 };
            for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++)
                    for (int i = 0; i < Sq; i++)
                        for (int j = 0; j < Sk; j++)
                            if (!ReferenceAttention.Sees(mask, b, h, i, j, Sq, Sk)) scores[((b * H + h) * Sq + i) * Sk + j] = float.NaN;
            var gpu = RunGpu(scores, B, H, Sq, Sk, 1f, mask, variant);
            Tolerance.AssertNoNaN(gpu, $"{variant} NaN at masked positions, Sk {Sk}", [B, H, Sq, Sk]);
            SoftmaxChecks.AssertMatches(gpu, scores, B, H, Sq, Sk, 1f, mask, "GPU", $"{variant} NaN at masked positions, Sk {Sk}");
        }
    }

    [Test]
    public void BadArgumentsThrowBeforeAnyWork()
    {
        using var x = DeviceTensor<float>.Allocate(Context, 1, 2, 3, 4);
        using var y = DeviceTensor<float>.Allocate(Context, 1, 2, 3, 4);
        using var wrong = DeviceTensor<float>.Allocate(Context, 1, 2, 3, 5);
        var sentinel = Enumerable.Repeat(7f, 24).ToArray();
        y.CopyFrom(sentinel);
        Assert.That(() => _softmax.Run(x, wrong), Throws.ArgumentException.With.Property("ParamName").EqualTo("output"));
        Assert.That(() => _softmax.Run(x, y, float.NaN), Throws.TypeOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("scale"));
        Assert.That(() => _softmax.Run(x, y, 1f, new AttentionMask { KeyLengths = [5] }),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("mask"));
        Assert.That(() => _softmax.Run<float>(null!, y), Throws.ArgumentNullException);
        Context.Synchronize();
        var after = new float[24];
        y.CopyTo(after);
        Assert.That(after, Is.EqualTo(sentinel), "nothing was written");
    }

    private float[] RunGpu<T>(T[] scores, int B, int H, int Sq, int Sk, float scale, AttentionMask mask, CudaKernelVariant variant)
        where T : unmanaged
    {
        using var x = DeviceTensor<T>.Allocate(Context, B, H, Sq, Sk);
        using var y = DeviceTensor<T>.Allocate(Context, B, H, Sq, Sk);
        x.CopyFrom(scores);
        y.CopyFrom(Num.Filled<T>(scores.Length, float.NaN));
        _softmax.Variant = variant;
        _softmax.Run(x, y, scale, mask);
        var result = new T[scores.Length];
        y.CopyTo(result);
        return Num.ToFloats<T>(result);
    }
}
