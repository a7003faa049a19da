// CpuAttention.Softmax (fused masked row softmax) vs the double reference, in place, with huge
// logits, and against the probabilities that Forward reports.

using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Cpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class SoftmaxTests
{
    private static readonly (int B, int H, int Sq, int Sk, float Scale, string Mask)[] Shapes =
    [
        (2, 3, 17, 113, 1f, "none"),
        (1, 4, 113, 17, 0.125f, "causal"),
        (2, 2, 64, 64, 0.7f, "win(5,3)"),
        (3, 2, 40, 203, 1.5f, "klen0+causal"),
        (2, 2, 203, 40, 1f, "qlen+win(-1,2)"),
        (1, 4, 96, 130, 0.9f, "randomh(16,16,2)"),
        (2, 2, 70, 70, 1f, "causal+local(8,8,1,0)+klen"),
        (1, 1, 1, 1, 1f, "none"),
        (1, 2, 3, 1025, 0.3f, "custom(1,64)"),
        (2, 2, 40, 64, -0.8f, "causal"),
        (1, 2, 17, 33, 0f, "win(4,4)"),
    ];

    private static IEnumerable<TestCaseData> Source()
    {
        foreach (string dtype in new[] { "f32", "f16", "bf16" })
        {
            for (int i = 0; i < Shapes.Length; i++)
            {
                var s = Shapes[i];
                yield return new TestCaseData(dtype, i).SetName($"Softmax({dtype} [{s.B},{s.H},{s.Sq},{s.Sk}] scale={s.Scale} {s.Mask})");
            }
        }
    }

    [TestCaseSource(nameof(Source))]
    public void MatchesReference(string dtype, int shapeIndex)
    {
        switch (dtype)
        {
            case "f32": Run<float>(shapeIndex); break;
            case "f16": Run<Half>(shapeIndex); break;
            default: Run<BFloat16>(shapeIndex); break;
        }
    }

    private static void Run<T>(int shapeIndex) where T : unmanaged
    {
        var (B, H, Sq, Sk, scale, maskSpec) = Shapes[shapeIndex];
        ulong seed = 500 + (ulong)shapeIndex;
        var mask = MaskSpec.Build(maskSpec, new AttentionShape(B, Sq, Sk, H, H, 1), seed);
        var scores = new Rng(seed).Normal<T>(B * H * Sq * Sk, 3.0);
        var actual = RunSoftmax(scores, B, H, Sq, Sk, scale, mask);
        AssertSoftmaxMatches<T>(actual, scores, B, H, Sq, Sk, scale, mask, $"softmax {Num.Name<T>()} {maskSpec}");
    }

    private static float[] RunSoftmax<T>(T[] scores, int B, int H, int Sq, int Sk, float scale, AttentionMask? mask, int maxDegreeOfParallelism = -1)
        where T : unmanaged
    {
        var output = Num.Filled<T>(scores.Length, float.NaN);
        CpuAttention.Softmax<T>(Views.Bhqk(scores, B, H, Sq, Sk), Views.Bhqk(output, B, H, Sq, Sk), scale, mask, maxDegreeOfParallelism);
        return Num.ToFloats<T>(output);
    }

    private static void AssertSoftmaxMatches<T>(float[] actual, T[] scores, int B, int H, int Sq, int Sk, float scale, AttentionMask? mask, string what)
        where T : unmanaged
    {
        mask ??= AttentionMask.None;
        var s = Num.ToFloats<T>(scores);
        var expected = ReferenceAttention.Softmax(s, B, H, Sq, Sk, scale, mask);
        int[] dims = [B, H, Sq, Sk];
        if (Num.IsHalfPrecision<T>())
        {
            var naive = ReferenceAttention.NaiveSoftmax<T>(s, B, H, Sq, Sk, scale, mask);
            Tolerance.AssertWithinNaive(actual, expected, naive, what, dims);
        }
        else
        {
            Tolerance.AssertClose(actual, expected, what, dims);
        }
    }

    [Test]
    public void NullMaskEqualsNoMask()
    {
        var scores = new Rng(3).Normal<float>(2 * 2 * 9 * 31, 2.0);
        var withNull = RunSoftmax(scores, 2, 2, 9, 31, 0.5f, null);
        var withNone = RunSoftmax(scores, 2, 2, 9, 31, 0.5f, AttentionMask.None);
        Tolerance.AssertBitwiseEqual(withNull, withNone, "softmax, null mask vs None", [2, 2, 9, 31]);
        AssertSoftmaxMatches(withNull, scores, 2, 2, 9, 31, 0.5f, null, "softmax, null mask");
    }

    [TestCase("f32")]
    [TestCase("f16")]
    [TestCase("bf16")]
    public void HugeLogitsStayFiniteAndMatchReference(string dtype)
    {
        switch (dtype)
        {
            case "f32": Huge<float>(); break;
            case "f16": Huge<Half>(); break;
            default: Huge<BFloat16>(); break;
        }
    }

    private static void Huge<T>() where T : unmanaged
    {
        // Integer scores times 500: logits up to 1e4 that are exact in fp32.
        const int B = 2, H = 2, Sq = 33, Sk = 71;
        var scores = new Rng(7).Integers<T>(B * H * Sq * Sk, -20, 20);
        var mask = new AttentionMask { Causal = true, KeyLengths = [71, 50] };
        var actual = RunSoftmax(scores, B, H, Sq, Sk, 500f, mask);
        Tolerance.AssertNoNaN(actual, "softmax of huge logits", [B, H, Sq, Sk]);
        AssertSoftmaxMatches(actual, scores, B, H, Sq, Sk, 500f, mask, $"softmax {Num.Name<T>()} huge logits");

        // And with unit scale and scores of magnitude 1e4 (fp32 only: Half cannot hold them exactly).
        if (typeof(T) == typeof(float))
        {
            // Softmax of logits x has condition number ~|x|: rounding x (or x·log2 e) in fp32 may move a
            // probability by ~|x|·2^-24 relative. Allow that (8x) on top of the fp32 policy.
            var big = new Rng(8).Normal<float>(B * H * Sq * Sk, 1e4);
            var r = RunSoftmax(big, B, H, Sq, Sk, 1f, mask);
            Tolerance.AssertNoNaN(r, "softmax of 1e4 scores", [B, H, Sq, Sk]);
            double maxLogit = big.Max(Math.Abs);
            var expected = ReferenceAttention.Softmax(big, B, H, Sq, Sk, 1.0, mask);
            Tolerance.AssertClose(r, expected, "softmax fp32 scores ~1e4", [B, H, Sq, Sk],
                rel: Tolerance.Fp32Rel + 8 * maxLogit * Math.Pow(2, -24));
        }
    }

    [TestCase("f32")]
    [TestCase("f16")]
    [TestCase("bf16")]
    public void InPlaceEqualsOutOfPlace(string dtype)
    {
        switch (dtype)
        {
            case "f32": InPlace<float>(); break;
            case "f16": InPlace<Half>(); break;
            default: InPlace<BFloat16>(); break;
        }
    }

    private static void InPlace<T>() where T : unmanaged
    {
        const int B = 2, H = 3, Sq = 50, Sk = 77;
        var scores = new Rng(9).Normal<T>(B * H * Sq * Sk, 2.0);
        var mask = new AttentionMask { WindowLeft = 10, WindowRight = 4, KeyLengths = [60, 77], QueryLengths = [50, 30] };
        var outOfPlace = RunSoftmax(scores, B, H, Sq, Sk, 0.8f, mask);
        var buffer = (T[])scores.Clone();
        CpuAttention.Softmax<T>(Views.Bhqk(buffer, B, H, Sq, Sk), Views.Bhqk(buffer, B, H, Sq, Sk), 0.8f, mask);
        Tolerance.AssertBitwiseEqual(Num.ToFloats<T>(buffer), outOfPlace, $"softmax {Num.Name<T>()} in place vs out of place", [B, H, Sq, Sk]);
        AssertSoftmaxMatches(Num.ToFloats<T>(buffer), scores, B, H, Sq, Sk, 0.8f, mask, $"softmax {Num.Name<T>()} in place");
    }

    [Test]
    public void MaskedPositionsHoldingNaNGiveZeroes()
    {
        // Masked positions (padding beyond the key/query lengths) are not part of the softmax: NaN there must not leak.
        const int B = 2, H = 2, Sq = 20, Sk = 30;
        var scores = new Rng(10).Normal<float>(B * H * Sq * Sk);
        var mask = new AttentionMask { KeyLengths = [25, 30], QueryLengths = [20, 12] };
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < Sq; i++)
                    for (int j = 0; j < Sk; j++)
                        if (!ReferenceAttention.Sees(mask, b, h, i, j, Sq, Sk)) scores[((b * H + h) * Sq + i) * Sk + j] = float.NaN;
        var actual = RunSoftmax(scores, B, H, Sq, Sk, 1f, mask);
        Tolerance.AssertNoNaN(actual, "softmax with NaN at masked positions", [B, H, Sq, Sk]);
        AssertSoftmaxMatches(actual, scores, B, H, Sq, Sk, 1f, mask, "softmax with NaN at masked positions");
    }

    [Test]
    public void ParallelismDoesNotChangeResults()
    {
        const int B = 2, H = 4, Sq = 64, Sk = 200;
        var scores = new Rng(11).Normal<BFloat16>(B * H * Sq * Sk, 2.0);
        var mask = new AttentionMask { Causal = true, KeyLengths = [150, 200] };
        var one = RunSoftmax(scores, B, H, Sq, Sk, 1f, mask, 1);
        var all = RunSoftmax(scores, B, H, Sq, Sk, 1f, mask, -1);
        Tolerance.AssertBitwiseEqual(all, one, "softmax, all cores vs 1 thread", [B, H, Sq, Sk]);
    }

    [Test]
    public void StridedScoresView()
    {
        // Scores stored [B, Sq, H, Sk] and viewed as [B, H, Sq, Sk] through strides.
        const int B = 2, H = 3, Sq = 15, Sk = 40;
        var rng = new Rng(12);
        var bqhk = rng.Normal<float>(B * Sq * H * Sk, 2.0);
        var bhqk = new float[bqhk.Length];
        for (int b = 0; b < B; b++)
            for (int i = 0; i < Sq; i++)
                for (int h = 0; h < H; h++)
                    Array.Copy(bqhk, ((b * Sq + i) * H + h) * Sk, bhqk, ((b * H + h) * Sq + i) * Sk, Sk);
        var output = Num.Filled<float>(bhqk.Length, float.NaN);
        var mask = AttentionMask.CausalMask;
        CpuAttention.Softmax<float>(Views.Strided(bqhk, [B, H, Sq, Sk], [Sq * H * Sk, Sk, H * Sk, 1]), Views.Bhqk(output, B, H, Sq, Sk), 1.2f, mask);
        AssertSoftmaxMatches(output, bhqk, B, H, Sq, Sk, 1.2f, mask, "softmax of a strided scores view");
    }

    [TestCase(1, 8, 40, 56, 2, 32)]
    [TestCase(2, 4, 33, 20, 4, 64)]
    public void AgreesWithForwardProbabilities(int B, int H, int Sq, int Sk, int hkv, int D)
    {
        // scores = Q·Kᵀ (double, rounded to fp32), laid out [B, H, Sq, Sk]; Softmax(scale = 1/sqrt(D), same mask)
        // must agree with the probabilities Forward reports for the same Q, K.
        var shape = new AttentionShape(B, Sq, Sk, H, hkv, D);
        var inputs = AttentionInputs<float>.Random(shape, 13);
        var mask = new AttentionMask { Causal = true, KeyLengths = [.. Enumerable.Range(0, B).Select(b => Sk - 3 * b)], WindowLeft = 15 };
        var options = new AttentionOptions { Mask = mask };
        var forward = inputs.Run(options, wantProbabilities: true);
        var scores = new float[B * H * Sq * Sk];
        int group = H / hkv;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < Sq; i++)
                    for (int j = 0; j < Sk; j++)
                    {
                        double dot = 0;
                        for (int d = 0; d < D; d++)
                        {
                            dot += (double)inputs.Q[Views.BshdIndex(b, i, h, d, Sq, H, D)] * inputs.K[Views.BshdIndex(b, j, h / group, d, Sk, hkv, D)];
                        }
                        scores[((b * H + h) * Sq + i) * Sk + j] = (float)dot;
                    }
        var softmax = RunSoftmax(scores, B, H, Sq, Sk, options.ResolveScale(D), mask);
        var asDouble = forward.Probabilities!.Select(p => (double)p).ToArray();
        Tolerance.AssertClose(softmax, asDouble, "Softmax(Q·Kᵀ) vs Forward probabilities", [B, H, Sq, Sk]);
    }
}
