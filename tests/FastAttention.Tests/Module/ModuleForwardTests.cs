// MultiHeadAttention.Forward vs the double reference of the whole module (ModuleReference): self and
// cross attention (Sq != Sk both ways), causal, sliding window, every block-sparse pattern, padding,
// biases on/off, MHA/GQA/MQA, odd sizes; probabilities; and proof that the tolerance catches a wrong
// mask, a swapped head, a wrong GQA grouping or a wrong scale.

using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Module;

/// <summary>
/// One module forward case. <see cref="Sk"/> null = self-attention. Lengths: "r" = random per sequence
/// in [1, S] (the last sequence full), "0" = random with the first sequence 0, null = none.
/// </summary>
public sealed record ModuleCase(string Name, int B, int Sq, int? Sk, int Model, int H, int Hkv = 0, int D = 0,
    bool Causal = false, int WindowLeft = -1, int WindowRight = -1,
    SparsePattern Sparse = SparsePattern.None, int BlockSize = 64, int LocalBlocks = 1, int Stride = 4, int RandomBlocks = 2,
    float? Scale = null, bool Bias = true, string? KeyLengths = null, string? QueryLengths = null, bool Probs = false)
{
    internal AttentionConfig Config() => new(Model, H, Hkv, D, Causal, WindowLeft, WindowRight, Sparse, BlockSize, LocalBlocks, Stride,
        RandomBlocks, randomSeed: 99, scale: Scale, bias: Bias);

    public override string ToString() => Name;
}

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class ModuleForwardTests
{
    private static readonly ModuleCase[] Cases =
    [
        // Self-attention, dense: MHA / GQA / MQA, with and without biases, odd sizes.
        new("self MHA B2 S17 M32 H4", 2, 17, null, 32, 4, Probs: true),
        new("self GQA B1 S113 M48 H4/2 no bias", 1, 113, null, 48, 4, 2, Bias: false, Probs: true),
        new("self MQA B2 S1 M24 H3/1", 2, 1, null, 24, 3, 1, Probs: true),
        new("self MQA B1 S17 M30 H4/1 D8 (30 % 4 != 0)", 1, 17, null, 30, 4, 1, 8),
        new("self GQA B2 S113 M7 H3/3 D5 no bias", 2, 113, null, 7, 3, 3, 5, Bias: false),
        new("self MHA B1 S17 M16 H1 D3 scale 0.7", 1, 17, null, 16, 1, 1, 3, Scale: 0.7f, Probs: true),
        new("self GQA B2 S17 M32 H8/2 scale -0.3", 2, 17, null, 32, 8, 2, Scale: -0.3f),

        // Cross-attention, Sq != Sk both ways.
        new("cross MHA Sq17 Sk113 M40 H6 D7", 2, 17, 113, 40, 6, D: 7, Probs: true),
        new("cross GQA Sq113 Sk17 M32 H4/2 no bias", 1, 113, 17, 32, 4, 2, Bias: false, Probs: true),
        new("cross MQA Sq1 Sk17 M24 H4/1", 3, 1, 17, 24, 4, 1),
        new("cross MQA Sq17 Sk1 M24 H4/1", 2, 17, 1, 24, 4, 1, Probs: true),

        // Causal (bottom-right aligned), including rows that see no key (Sq > Sk: output = bo).
        new("causal self GQA S113 M32 H4/2", 2, 113, null, 32, 4, 2, Causal: true, Probs: true),
        new("causal cross Sq17 Sk113 MQA", 1, 17, 113, 32, 4, 1, Causal: true, Probs: true),
        new("causal cross Sq113 Sk17 MHA (empty rows)", 2, 113, 17, 24, 2, Causal: true, Probs: true),
        new("causal self S1 no bias", 2, 1, null, 16, 2, Causal: true, Bias: false),

        // Sliding windows.
        new("window(5,3) self S113 MHA", 1, 113, null, 32, 4, WindowLeft: 5, WindowRight: 3, Probs: true),
        new("window(4,0)+causal self S113 GQA", 2, 113, null, 32, 4, 2, Causal: true, WindowLeft: 4, WindowRight: 0),
        new("window(-1,2) cross Sq17 Sk113 MQA", 1, 17, 113, 24, 2, 1, WindowLeft: -1, WindowRight: 2, Probs: true),
        new("window(3,-1) cross Sq113 Sk17 no bias", 1, 113, 17, 24, 2, WindowLeft: 3, WindowRight: -1, Bias: false),

        // Block-sparse patterns with small blocks so they bite.
        new("local bs8 l1 self S113 GQA", 1, 113, null, 32, 4, 2, Sparse: SparsePattern.Local, BlockSize: 8, LocalBlocks: 1, Probs: true),
        new("local bs4 l0 self S17 causal", 2, 17, null, 24, 2, Causal: true, Sparse: SparsePattern.Local, BlockSize: 4, LocalBlocks: 0, Probs: true),
        new("strided bs4 l0 s3 self S113 MQA", 1, 113, null, 32, 4, 1, Sparse: SparsePattern.Strided, BlockSize: 4, LocalBlocks: 0, Stride: 3, Probs: true),
        new("strided bs8 l1 s4 cross Sq17 Sk113", 2, 17, 113, 32, 4, 2, Sparse: SparsePattern.Strided, BlockSize: 8, LocalBlocks: 1, Stride: 4, Probs: true),
        new("random bs8 r2 self S113 MHA (per head)", 1, 113, null, 32, 4, Sparse: SparsePattern.Random, BlockSize: 8, RandomBlocks: 2, Probs: true),
        new("random bs4 r1 cross Sq113 Sk17 GQA no bias", 2, 113, 17, 24, 4, 2, Sparse: SparsePattern.Random, BlockSize: 4, RandomBlocks: 1, Bias: false, Probs: true),
        new("random bs8 r0 causal self S113 (diagonal only)", 1, 113, null, 32, 2, 1, Causal: true, Sparse: SparsePattern.Random, BlockSize: 8, RandomBlocks: 0),

        // Padding.
        new("keyLengths self S17 B3", 3, 17, null, 32, 4, 2, KeyLengths: "r", Probs: true),
        new("queryLengths self S17 B3", 3, 17, null, 32, 4, 2, QueryLengths: "r", Probs: true),
        new("both lengths + causal self S113 B2", 2, 113, null, 24, 2, Causal: true, KeyLengths: "r", QueryLengths: "r", Probs: true),
        new("keyLengths with 0 cross Sq17 Sk113 B3", 3, 17, 113, 24, 4, 1, KeyLengths: "0", Probs: true),
        new("queryLengths with 0 cross Sq113 Sk17 B2 no bias", 2, 113, 17, 24, 2, QueryLengths: "0", Bias: false),
        new("lengths + window + local bs4 B2 S17", 2, 17, null, 24, 2, WindowLeft: 6, WindowRight: 1, Sparse: SparsePattern.Local,
            BlockSize: 4, LocalBlocks: 1, KeyLengths: "r", QueryLengths: "r", Probs: true),
    ];

    private static int[]? Lengths(string? spec, int batch, int max, Rng rng)
    {
        if (spec is null) return null;
        var r = new int[batch];
        for (int b = 0; b < batch; b++) r[b] = rng.Next(1, max);
        r[^1] = max;
        if (spec == "0") r[0] = 0;
        return r;
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(ModuleCase t)
    {
        var c = t.Config();
        var m = ModuleData.Create(c, 1);
        var rng = new Rng(7);
        int sk = t.Sk ?? t.Sq;
        var x = ModuleData.Input(t.B, t.Sq, t.Model, 2);
        var ctx = t.Sk is null ? null : ModuleData.Input(t.B, sk, t.Model, 3);
        var kl = Lengths(t.KeyLengths, t.B, sk, rng);
        var ql = Lengths(t.QueryLengths, t.B, t.Sq, rng);

        var (y, p) = ModuleData.Run(m, x, t.B, t.Sq, ctx, sk, kl, ql, t.Probs);
        var expected = ModuleReference.Forward(m, x, t.B, t.Sq, ctx, sk, kl, ql, t.Probs);
        Tolerance.AssertClose(y, expected.Output, $"{t.Name}: output", [t.B, t.Sq, t.Model], ModuleReference.Abs, ModuleReference.Rel);
        if (t.Probs)
        {
            Tolerance.AssertClose(p!, expected.Probabilities!, $"{t.Name}: probabilities", [t.B, t.H, t.Sq, sk], ModuleReference.Abs, ModuleReference.Rel);
        }

        // Without probabilities the output is the same (the probabilities pass must not change it).
        if (t.Probs)
        {
            var (y2, _) = ModuleData.Run(m, x, t.B, t.Sq, ctx, sk, kl, ql, probabilities: false);
            Tolerance.AssertClose(y2, expected.Output, $"{t.Name}: output without probabilities", [t.B, t.Sq, t.Model], ModuleReference.Abs, ModuleReference.Rel);
        }
    }

    [Test]
    public void PaddedQueryRowsOutputTheOutputBias()
    {
        // queryLengths = [3, 0]: rows 3.. of sequence 0 and every row of sequence 1 see nothing, so
        // attention gives 0 and the module gives exactly bo (0·Wo + bo), never NaN.
        var c = new AttentionConfig(24, 4, 2, causal: true);
        var m = ModuleData.Create(c, 11);
        var x = ModuleData.Input(2, 9, 24, 12);
        var (y, p) = ModuleData.Run(m, x, 2, 9, null, 9, queryLengths: [3, 0], probabilities: true);
        var bo = m.OutputBias.ToArray();
        for (int b = 0; b < 2; b++)
        {
            for (int i = b == 0 ? 3 : 0; i < 9; i++)
            {
                Assert.That(y.AsSpan((b * 9 + i) * 24, 24).ToArray(), Is.EqualTo(bo).Within(1e-6), $"row [{b}, {i}] must be the output bias");
                for (int h = 0; h < 4; h++)
                {
                    Assert.That(p!.AsSpan(((b * 4 + h) * 9 + i) * 9, 9).ToArray(), Is.All.EqualTo(0f), $"probabilities of padded row [{b}, {h}, {i}]");
                }
            }
        }
    }

    [Test]
    public void ProbabilitiesAreZeroWhereMaskedAndRowsSumToOne()
    {
        // Strided pattern + causal + key padding: every masked weight is exactly 0, every visible row sums to 1.
        var c = new AttentionConfig(32, 4, 2, causal: true, sparse: SparsePattern.Strided, blockSize: 4, localBlocks: 0, stride: 2);
        var m = ModuleData.Create(c, 13);
        int batch = 2, s = 37;
        var x = ModuleData.Input(batch, s, 32, 14);
        int[] kl = [20, 37];
        var (_, p) = ModuleData.Run(m, x, batch, s, null, s, keyLengths: kl, probabilities: true);
        var mask = ModuleReference.MaskOf(c, s, s, kl, null);
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < 4; h++)
                for (int i = 0; i < s; i++)
                {
                    double sum = 0;
                    bool any = false;
                    for (int j = 0; j < s; j++)
                    {
                        float v = p![((b * 4 + h) * s + i) * s + j];
                        if (!ReferenceAttention.Sees(mask, b, h, i, j, s, s))
                        {
                            Assert.That(v, Is.EqualTo(0f), $"masked weight [{b}, {h}, {i}, {j}]");
                        }
                        else
                        {
                            any = true;
                            sum += v;
                        }
                    }
                    Assert.That(sum, Is.EqualTo(any ? 1.0 : 0.0).Within(1e-5), $"row [{b}, {h}, {i}] sum");
                }
    }

    [Test]
    public void RepeatedCallsWithChangingShapesReuseScratchCorrectly()
    {
        // One module, calls whose sizes grow, shrink, and switch between self and cross attention: the
        // scratch buffers and the cached block layout (keyed by Sq, Sk) must never leak between calls.
        var c = new AttentionConfig(24, 4, 2, sparse: SparsePattern.Local, blockSize: 4, localBlocks: 1);
        var m = ModuleData.Create(c, 15);
        (int B, int Sq, int? Sk)[] calls = [(1, 17, null), (2, 113, null), (1, 17, null), (2, 17, 113), (1, 113, 17), (2, 17, 113), (3, 1, null), (1, 17, null)];
        ulong seed = 100;
        foreach (var (b, sq, skOpt) in calls)
        {
            int sk = skOpt ?? sq;
            var x = ModuleData.Input(b, sq, 24, seed++);
            var ctx = skOpt is null ? null : ModuleData.Input(b, sk, 24, seed++);
            var (y, p) = ModuleData.Run(m, x, b, sq, ctx, sk, probabilities: true);
            var e = ModuleReference.Forward(m, x, b, sq, ctx, sk, probabilities: true);
            string what = $"call B{b} Sq{sq} Sk{sk}";
            Tolerance.AssertClose(y, e.Output, what, [b, sq, 24], ModuleReference.Abs, ModuleReference.Rel);
            Tolerance.AssertClose(p!, e.Probabilities!, what + " probabilities", [b, 4, sq, sk], ModuleReference.Abs, ModuleReference.Rel);
        }
    }

    [Test]
    public void SelfAttentionEqualsCrossAttentionWithTheSameContext()
    {
        // The fused QKV path (self) and the split Q / KV path (cross) compute the same thing.
        var c = new AttentionConfig(40, 6, 3, 7, causal: true);
        var m = ModuleData.Create(c, 16);
        var x = ModuleData.Input(2, 17, 40, 17);
        var (self, _) = ModuleData.Run(m, x, 2, 17, null, 17);
        var (cross, _) = ModuleData.Run(m, x, 2, 17, (float[])x.Clone(), 17);
        Tolerance.AssertNear(cross, self, 2e-6, "cross(x, x) vs self(x)", [2, 17, 40]);
    }

    [Test]
    public void InputIsNotModified()
    {
        var c = new AttentionConfig(24, 4, 1);
        var m = ModuleData.Create(c, 18);
        var x = ModuleData.Input(2, 17, 24, 19);
        var ctx = ModuleData.Input(2, 9, 24, 20);
        var (x0, c0) = ((float[])x.Clone(), (float[])ctx.Clone());
        ModuleData.Run(m, x, 2, 17, ctx, 9, probabilities: true);
        ModuleData.Run(m, x, 2, 17, null, 17);
        Assert.That(x, Is.EqualTo(x0));
        Assert.That(ctx, Is.EqualTo(c0));
    }

    // ---- The tolerance is tight enough: a reference with a deliberate error must fail it. ----

    private static IEnumerable<TestCaseData> Mutations()
    {
        static TestCaseData Case(string name, ModuleCase t, ReferenceMutation mutation) => new TestCaseData(t, mutation).SetArgDisplayNames(name);

        var causal = new ModuleCase("", 1, 17, null, 32, 4, 2, Causal: true);
        yield return Case("causal shifted by one key", causal, new() { Mask = m => m with { Causal = false, WindowRight = 1 } });
        yield return Case("causal dropped", causal, new() { Mask = m => m with { Causal = false } });
        var crossCausal = new ModuleCase("", 1, 17, 113, 32, 4, 2, Causal: true);
        yield return Case("causal top-left aligned instead of bottom-right", crossCausal,
            new() { Mask = m => m with { Causal = false, BlockMask = TopLeftCausal(17, 113) } });
        var window = new ModuleCase("", 1, 113, null, 32, 4, 2, WindowLeft: 5, WindowRight: 3);
        yield return Case("window left + 1", window, new() { Mask = m => m with { WindowLeft = 6 } });
        yield return Case("window right - 1", window, new() { Mask = m => m with { WindowRight = 2 } });
        var local = new ModuleCase("", 1, 113, null, 32, 4, 2, Sparse: SparsePattern.Local, BlockSize: 8, LocalBlocks: 1);
        yield return Case("local blocks + 1", local, new() { Mask = m => m with { BlockMask = BlockSparseMask.Local(113, 113, 8, 8, 2, 2) } });
        var random = new ModuleCase("", 1, 113, null, 32, 4, Sparse: SparsePattern.Random, BlockSize: 8, RandomBlocks: 2);
        yield return Case("random layout shared by heads instead of per head", random,
            new() { Mask = m => m with { BlockMask = BlockSparseMask.Random(113, 113, 8, 8, 2, 99) } });
        var padded = new ModuleCase("", 2, 17, null, 32, 4, 2);
        yield return Case("key padding ignored", padded with { KeyLengths = "r" }, new() { Mask = m => m with { KeyLengths = null } });
        yield return Case("query padding ignored", padded with { QueryLengths = "r" }, new() { Mask = m => m with { QueryLengths = null } });
        yield return Case("query heads 0 and 1 swapped", new ModuleCase("", 1, 17, null, 32, 4, 4), new() { SwapQueryHeads = true });
        yield return Case("GQA groups interleaved (h % Hkv)", new ModuleCase("", 1, 17, null, 32, 4, 2), new() { InterleavedGroups = true });
        yield return Case("scale off by 1%", new ModuleCase("", 1, 17, null, 32, 4, 2), new() { ScaleFactor = 1.01 });
    }

    private static BlockSparseMask TopLeftCausal(int sq, int sk)
    {
        var keep = new bool[sq * sk];
        for (int i = 0; i < sq; i++)
            for (int j = 0; j < sk; j++)
                keep[i * sk + j] = j <= i;
        return new BlockSparseMask(keep, 1, sq, sk, 1, 1);
    }

    [TestCaseSource(nameof(Mutations))]
    public void ToleranceDetects(ModuleCase t, ReferenceMutation mutation)
    {
        var c = t.Config();
        var m = ModuleData.Create(c, 1);
        var rng = new Rng(7);
        int sk = t.Sk ?? t.Sq;
        var x = ModuleData.Input(t.B, t.Sq, t.Model, 2);
        var ctx = t.Sk is null ? null : ModuleData.Input(t.B, sk, t.Model, 3);
        var kl = Lengths(t.KeyLengths, t.B, sk, rng);
        var ql = Lengths(t.QueryLengths, t.B, t.Sq, rng);
        var (y, _) = ModuleData.Run(m, x, t.B, t.Sq, ctx, sk, kl, ql);

        var right = ModuleReference.Forward(m, x, t.B, t.Sq, ctx, sk, kl, ql);
        Tolerance.AssertClose(y, right.Output, "unmutated reference", [t.B, t.Sq, t.Model], ModuleReference.Abs, ModuleReference.Rel);

        var wrong = ModuleReference.Forward(m, x, t.B, t.Sq, ctx, sk, kl, ql, mutation: mutation);
        double worstExcess = double.NegativeInfinity;
        for (int i = 0; i < y.Length; i++)
        {
            double allowed = ModuleReference.Abs + ModuleReference.Rel * Math.Abs(wrong.Output[i]);
            worstExcess = Math.Max(worstExcess, Math.Abs(y[i] - wrong.Output[i]) / allowed);
        }
        TestContext.Out.WriteLine($"worst error / allowed against the mutated reference: {worstExcess:G3}");
        Assert.That(worstExcess, Is.GreaterThan(10), "the mutated reference must miss the tolerance by a wide margin (ratio error / allowed)");
    }
}
