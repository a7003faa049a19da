// CpuAttention.Forward vs the double reference over a covering set of shapes, masks and element types.
//
// Not a cartesian product: each row below was chosen so that every value of every axis appears
// (seq 1, 2, 17, 113, 203, 339, 1023, 1025 with Sq != Sk both ways; D 32..256 plus the edges 1, 3
// and MaxHeadDim; H/Hkv 1, 2, 8 and MQA; each mask kind alone and in combination; fp32/fp16/bf16),
// with the expensive 1023/1025 rows kept to small H.

using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Cpu;

/// <summary>One parity case. <see cref="Mask"/> uses the <see cref="MaskSpec"/> notation.</summary>
public sealed record ParityCase(string DType, int B, int Sq, int Sk, int H, int Hkv, int D, string Mask,
    bool Probs = false, float? Scale = null, bool Lse = true)
{
    public override string ToString() =>
        $"{DType} B{B} Sq{Sq} Sk{Sk} H{H}/{Hkv} D{D} {Mask}{(Scale is { } s ? $" scale={s}" : "")}{(Probs ? " +probs" : "")}{(Lse ? "" : " -lse")}";
}

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class ForwardParityTests
{
    private static readonly ParityCase[] Cases =
    [
        // No mask: head dims, GQA ratios, tiny and odd sequence lengths.
        new("f32", 2, 17, 113, 4, 4, 32, "none", Probs: true),
        new("f16", 1, 113, 17, 2, 1, 64, "none"),
        new("bf16", 3, 2, 1, 3, 3, 80, "none", Probs: true),
        new("f32", 1, 1, 2, 8, 1, 96, "none"),
        new("f16", 2, 203, 339, 2, 2, 128, "none", Lse: false),
        new("bf16", 1, 339, 203, 16, 2, 32, "none"),
        new("f32", 1, 1025, 1023, 2, 1, 128, "none"),
        new("f16", 1, 1025, 1023, 2, 1, 256, "causal+klen"),
        new("f32", 2, 1023, 1025, 4, 2, 128, "causal", Probs: true),
        new("bf16", 1, 1025, 1023, 4, 1, 128, "local(64,64,3,1)"),
        new("f16", 1, 1023, 339, 2, 2, 80, "win(128,0)"),
        new("f16", 1, 1025, 1, 2, 2, 256, "none"),
        new("f32", 1, 1, 1025, 4, 2, 256, "none", Probs: true),
        new("f32", 2, 1, 1, 1, 1, 64, "none", Probs: true),
        new("bf16", 2, 2, 2, 2, 1, 256, "none"),
        new("f32", 2, 17, 113, 2, 1, 1, "causal"),
        new("f16", 1, 113, 17, 2, 2, 3, "none"),
        new("f32", 1, 5, 7, 2, 2, CpuAttention.MaxHeadDim, "none", Probs: true),
        new("bf16", 1, 17, 113, 2, 2, CpuAttention.MaxHeadDim, "causal"),
        new("f32", 2, 203, 203, 4, 4, 64, "none", Scale: 0.3f),
        new("bf16", 1, 113, 203, 2, 2, 64, "none", Scale: 2f),
        new("f16", 1, 113, 113, 2, 2, 32, "causal", Probs: true, Scale: 0.05f),
        new("f32", 1, 113, 203, 4, 2, 64, "causal", Probs: true, Scale: -0.4f),
        new("bf16", 2, 17, 113, 2, 1, 32, "win(5,3)", Probs: true, Scale: 0f),

        // Causal, bottom-right aligned both ways.
        new("f32", 2, 113, 113, 4, 2, 64, "causal", Probs: true),
        new("f16", 1, 17, 203, 2, 2, 96, "causal"),
        new("bf16", 2, 203, 17, 4, 4, 128, "causal", Probs: true),
        new("f32", 1, 339, 339, 8, 1, 80, "causal"),
        new("f32", 1, 1023, 1023, 2, 2, 64, "causal"),
        new("bf16", 1, 1023, 1025, 1, 1, 256, "causal"),
        new("f32", 1, 1023, 1, 2, 2, 32, "causal"),
        new("f16", 1, 2, 1025, 8, 1, 64, "causal"),

        // Sliding windows, including unbounded sides, and causal + window.
        new("f32", 2, 113, 203, 2, 2, 32, "win(16,0)", Probs: true),
        new("f16", 1, 203, 113, 4, 2, 64, "win(-1,8)"),
        new("bf16", 1, 339, 1025, 2, 1, 96, "win(32,-1)"),
        new("f32", 1, 17, 17, 3, 3, 128, "win(0,0)", Probs: true),
        new("f16", 2, 113, 339, 8, 8, 80, "win(5,7)"),
        new("f32", 1, 1025, 1023, 1, 1, 256, "win(100,100)"),
        new("bf16", 1, 1025, 1025, 2, 2, 128, "causal+win(63,-1)"),
        new("f32", 2, 203, 203, 4, 1, 256, "causal+win(31,0)"),
        new("f16", 1, 17, 113, 2, 2, 32, "causal+win(3,5)", Probs: true),
        new("bf16", 2, 339, 2, 2, 2, 64, "win(0,-1)"),

        // Per-sequence key/query lengths (padding), with GQA/MQA.
        new("f32", 3, 113, 203, 4, 2, 64, "klen", Probs: true),
        new("f16", 2, 17, 339, 8, 1, 128, "klen"),
        new("bf16", 3, 203, 113, 16, 2, 80, "klen"),
        new("f32", 3, 2, 17, 2, 2, 96, "klen0", Probs: true),
        new("f32", 2, 203, 113, 2, 2, 32, "qlen", Probs: true),
        new("bf16", 2, 113, 113, 4, 4, 256, "qlen+klen+causal"),
        new("f16", 3, 339, 339, 2, 1, 64, "qlen+klen", Lse: false),
        new("f32", 2, 17, 339, 4, 2, 80, "qlen+klen+win(8,8)", Probs: true),
        new("f16", 2, 339, 203, 8, 1, 64, "klen+causal"),
        new("bf16", 1, 2, 1023, 4, 4, 96, "causal+klen"),
        new("f32", 3, 17, 17, 2, 1, 32, "qlen0+causal", Probs: true),

        // Block-sparse layouts: local, strided, random (shared and per head), custom, dense.
        new("f32", 1, 203, 203, 4, 4, 64, "local(32,32,1,0)", Probs: true),
        new("f16", 2, 339, 113, 2, 1, 128, "local(16,8,2,1)"),
        new("bf16", 1, 113, 339, 8, 2, 32, "local(7,13,1,1)"),
        new("f32", 1, 339, 203, 2, 2, 96, "strided(16,16,1,0,4)", Probs: true),
        new("f16", 1, 1023, 1025, 2, 2, 64, "strided(64,64,2,0,4)"),
        new("bf16", 2, 203, 339, 4, 1, 80, "strided(8,32,0,1,3)"),
        new("f32", 2, 113, 113, 4, 2, 128, "random(16,16,2)", Probs: true),
        new("f16", 1, 339, 339, 8, 8, 256, "randomh(32,16,3)"),
        new("f32", 1, 113, 203, 4, 4, 64, "randomh(8,16,4)", Probs: true),
        new("bf16", 1, 17, 2, 2, 2, 64, "random(4,1,1)"),
        new("f32", 1, 203, 113, 4, 4, 32, "custom(16,16)", Probs: true),
        new("f16", 2, 113, 203, 2, 1, 96, "custom(32,8)"),
        new("bf16", 1, 339, 339, 2, 2, 128, "custom(64,64)"),
        new("f16", 2, 1, 339, 2, 2, 32, "custom(1,1)"),
        new("f32", 1, 113, 339, 2, 2, 64, "dense(16,32)"),
        new("f16", 1, 203, 203, 4, 2, 80, "dense(128,128)"),
        new("bf16", 2, 17, 17, 2, 2, 32, "dense(1,1)", Probs: true),
        new("f32", 2, 339, 1025, 4, 2, 64, "randomh(16,16,2)", Probs: true),
        new("f32", 1, 1023, 1025, 8, 2, 80, "local(64,64,1,1)"),

        // Combinations: causal + block-sparse, window + block-sparse, padding + block-sparse.
        new("f32", 1, 339, 339, 4, 4, 64, "causal+local(32,32,2,0)", Probs: true),
        new("f16", 1, 203, 339, 2, 2, 128, "causal+random(16,16,2)"),
        new("bf16", 1, 1025, 1025, 2, 1, 64, "causal+strided(64,64,1,0,4)"),
        new("f32", 2, 113, 203, 4, 2, 32, "klen+local(16,16,1,1)", Probs: true),
        new("f32", 1, 203, 203, 2, 2, 64, "win(40,40)+custom(32,32)"),
        new("bf16", 2, 113, 339, 8, 1, 96, "qlen+klen+causal+randomh(16,32,2)"),
    ];

    private static IEnumerable<TestCaseData> Source() =>
        Cases.Select((c, i) => new TestCaseData(c, i).SetName($"Parity({c})"));

    [TestCaseSource(nameof(Source))]
    public void MatchesReference(ParityCase c, int index)
    {
        switch (c.DType)
        {
            case "f32": Run<float>(c, index); break;
            case "f16": Run<Half>(c, index); break;
            case "bf16": Run<BFloat16>(c, index); break;
            default: Assert.Fail($"unknown dtype {c.DType}"); break;
        }
    }

    /// <summary>Every third case again with the 256- and 128-bit kernels forced (AVX2-only and 128-bit SIMD machines).</summary>
    private static IEnumerable<TestCaseData> NarrowWidthCases()
    {
        for (int i = 0; i < Cases.Length; i += 3)
        {
            foreach (int bits in new[] { 256, 128 })
            {
                yield return new TestCaseData(i, bits).SetName($"ParityAt{bits}Bits({Cases[i]})");
            }
        }
    }

    [TestCaseSource(nameof(NarrowWidthCases))]
    public void ParityAtNarrowerVectorWidths(int index, int bits)
    {
        var c = Cases[index];
        var width = bits == 256 ? VectorWidth.V256 : VectorWidth.V128;
        switch (c.DType)
        {
            case "f32": Run<float>(c, index, width); break;
            case "f16": Run<Half>(c, index, width); break;
            case "bf16": Run<BFloat16>(c, index, width); break;
            default: Assert.Fail($"unknown dtype {c.DType}"); break;
        }
    }

    private static void Run<T>(ParityCase c, int index, VectorWidth width = VectorWidth.Auto) where T : unmanaged
    {
        var shape = new AttentionShape(c.B, c.Sq, c.Sk, c.H, c.Hkv, c.D);
        ulong seed = 1000 + (ulong)index;
        var inputs = AttentionInputs<T>.Random(shape, seed);
        var options = new AttentionOptions { Mask = MaskSpec.Build(c.Mask, shape, seed), Scale = c.Scale, Width = width };
        var actual = inputs.Run(options, c.Lse, c.Probs);
        inputs.AssertMatchesReference(actual, options, c.ToString());
    }

    [Test]
    public void CoveringSetCoversEveryAxisValue()
    {
        // Guards the case table itself: every required axis value must stay covered.
        int[] seqs = [1, 2, 17, 113, 203, 339, 1023, 1025];
        int[] dims = [32, 64, 80, 96, 128, 256];
        string[] maskTerms = ["none", "causal", "win(", "klen", "qlen", "local(", "strided(", "random(", "randomh(", "custom(", "dense("];
        Assert.Multiple(() =>
        {
            foreach (int s in seqs)
            {
                Assert.That(Cases.Any(c => c.Sq == s && c.Sk != s), $"Sq = {s} with Sq != Sk");
                Assert.That(Cases.Any(c => c.Sk == s && c.Sq != s), $"Sk = {s} with Sq != Sk");
            }
            foreach (string dt in new[] { "f32", "f16", "bf16" })
            {
                foreach (int d in dims) Assert.That(Cases.Any(c => c.D == d && c.DType == dt), $"D = {d} in {dt}");
                foreach (string m in maskTerms) Assert.That(Cases.Any(c => c.Mask.Contains(m, StringComparison.Ordinal) && c.DType == dt), $"mask {m} in {dt}");
                Assert.That(Cases.Any(c => c.DType == dt && c.Hkv == 1 && c.H > 1), $"MQA in {dt}");
            }
            foreach (int ratio in new[] { 1, 2, 8 }) Assert.That(Cases.Any(c => c.H / c.Hkv == ratio && c.Hkv > 1 || ratio == 1 && c.H == c.Hkv), $"H/Hkv = {ratio}");
        });
    }
}
