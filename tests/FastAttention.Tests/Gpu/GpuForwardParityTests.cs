// CudaAttention.Forward on a GPU vs the CPU engine vs the double reference (DESIGN.md section 4): the plain SIMT
// kernel first, then the tuned kernel against both, over the CPU engine's sweep (odd lengths, every supported head
// dim, Sq != Sk both ways, GQA ratios and MQA, every mask kind, every type), plus large cases (S = 8192, 16384)
// against the CPU engine only (the double reference is too slow there; the CPU engine is itself checked against it).
// Padding rows of K/V (keys past a sequence's length) and Q (rows past its query length) hold NaN on the device, so
// a kernel that reads them fails. Ignored, with the reason, where no CUDA device exists.
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Cuda;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

/// <summary>One GPU parity case; <see cref="Mask"/> uses the <see cref="MaskSpec"/> notation.</summary>
public sealed record GpuCase(string DType, int B, int Sq, int Sk, int H, int Hkv, int D, string Mask, float? Scale = null, bool Lse = true)
{
    public override string ToString() =>
        $"{DType} B{B} Sq{Sq} Sk{Sk} H{H}/{Hkv} D{D} {Mask}{(Scale is { } s ? $" scale={s}" : "")}{(Lse ? "" : " -lse")}";
}

[TestFixture]
public sealed class GpuForwardParityTests : GpuFixture
{
    private static readonly GpuCase[] Cases =
    [
        // No mask: head dims, GQA ratios, tiny and odd sequence lengths.
        new("f32", 2, 17, 113, 4, 4, 32, "none"),
        new("f16", 1, 113, 17, 2, 1, 64, "none"),
        new("bf16", 3, 2, 1, 3, 3, 80, "none"),
        new("f32", 1, 1, 2, 8, 1, 96, "none"),
        new("f16", 2, 203, 339, 2, 2, 128, "none", Lse: false),
        new("bf16", 1, 339, 203, 16, 2, 32, "none"),
        new("f32", 1, 1025, 1023, 2, 1, 128, "none"),
        new("f16", 1, 1025, 1023, 2, 1, 256, "causal+klen"),
        new("bf16", 1, 1023, 1025, 2, 2, 96, "none"),
        new("f16", 1, 1, 1025, 4, 2, 256, "none"),
        new("f32", 2, 1, 1, 1, 1, 64, "none"),
        new("bf16", 2, 2, 2, 2, 1, 256, "none"),
        new("f16", 2, 203, 203, 4, 4, 64, "none", Scale: 0.3f),
        new("bf16", 1, 113, 203, 2, 2, 64, "none", Scale: 2f),
        new("f16", 1, 113, 113, 2, 2, 32, "causal", Scale: 0.05f),
        new("f32", 1, 113, 203, 4, 2, 64, "causal", Scale: -0.4f),
        new("f16", 1, 113, 203, 4, 2, 128, "causal", Scale: -0.4f),
        new("bf16", 2, 17, 113, 2, 1, 32, "win(5,3)", Scale: 0f),
        new("f16", 2, 17, 113, 2, 1, 80, "none", Scale: 0f),

        // Causal, bottom-right aligned both ways.
        new("f32", 2, 113, 113, 4, 2, 64, "causal"),
        new("f16", 1, 17, 203, 2, 2, 96, "causal"),
        new("bf16", 2, 203, 17, 4, 4, 128, "causal"),
        new("f16", 1, 339, 339, 8, 1, 80, "causal"),
        new("bf16", 1, 1023, 1023, 2, 2, 64, "causal"),
        new("bf16", 1, 1023, 1025, 1, 1, 256, "causal"),
        new("f16", 1, 1023, 1, 2, 2, 32, "causal"),
        new("f16", 1, 2, 1025, 8, 1, 64, "causal"),

        // Sliding windows, including unbounded sides, and causal + window.
        new("f32", 2, 113, 203, 2, 2, 32, "win(16,0)"),
        new("f16", 1, 203, 113, 4, 2, 64, "win(-1,8)"),
        new("bf16", 1, 339, 1025, 2, 1, 96, "win(32,-1)"),
        new("f16", 1, 17, 17, 3, 3, 128, "win(0,0)"),
        new("f16", 2, 113, 339, 8, 8, 80, "win(5,7)"),
        new("bf16", 1, 1025, 1023, 1, 1, 256, "win(100,100)"),
        new("bf16", 1, 1025, 1025, 2, 2, 128, "causal+win(63,-1)"),
        new("f16", 2, 203, 203, 4, 1, 256, "causal+win(31,0)"),
        new("f16", 1, 17, 113, 2, 2, 32, "causal+win(3,5)"),
        new("bf16", 2, 339, 2, 2, 2, 64, "win(0,-1)"),

        // Per-sequence key/query lengths (padding), with GQA/MQA.
        new("f32", 3, 113, 203, 4, 2, 64, "klen"),
        new("f16", 2, 17, 339, 8, 1, 128, "klen"),
        new("bf16", 3, 203, 113, 16, 2, 80, "klen"),
        new("f16", 3, 2, 17, 2, 2, 96, "klen0"),
        new("f32", 2, 203, 113, 2, 2, 32, "qlen"),
        new("bf16", 2, 113, 113, 4, 4, 256, "qlen+klen+causal"),
        new("f16", 3, 339, 339, 2, 1, 64, "qlen+klen", Lse: false),
        new("bf16", 2, 17, 339, 4, 2, 80, "qlen+klen+win(8,8)"),
        new("f16", 2, 339, 203, 8, 1, 64, "klen+causal"),
        new("bf16", 1, 2, 1023, 4, 4, 96, "causal+klen"),
        new("f16", 3, 17, 17, 2, 1, 32, "qlen0+causal"),

        // Block-sparse layouts: local, strided, random (shared and per head), custom, dense.
        new("f32", 1, 203, 203, 4, 4, 64, "local(32,32,1,0)"),
        new("f16", 2, 339, 113, 2, 1, 128, "local(16,8,2,1)"),
        new("bf16", 1, 113, 339, 8, 2, 32, "local(7,13,1,1)"),
        new("f16", 1, 339, 203, 2, 2, 96, "strided(16,16,1,0,4)"),
        new("f16", 1, 1023, 1025, 2, 2, 64, "strided(64,64,2,0,4)"),
        new("bf16", 2, 203, 339, 4, 1, 80, "strided(8,32,0,1,3)"),
        new("f16", 2, 113, 113, 4, 2, 128, "random(16,16,2)"),
        new("f16", 1, 339, 339, 8, 8, 256, "randomh(32,16,3)"),
        new("bf16", 1, 113, 203, 4, 4, 64, "randomh(8,16,4)"),
        new("bf16", 1, 17, 2, 2, 2, 64, "random(4,1,1)"),
        new("f32", 1, 203, 113, 4, 4, 32, "custom(16,16)"),
        new("f16", 2, 113, 203, 2, 1, 96, "custom(32,8)"),
        new("bf16", 1, 339, 339, 2, 2, 128, "custom(64,64)"),
        new("f16", 2, 1, 339, 2, 2, 32, "custom(1,1)"),
        new("bf16", 1, 113, 339, 2, 2, 64, "dense(16,32)"),
        new("f16", 1, 203, 203, 4, 2, 80, "dense(128,128)"),
        new("bf16", 2, 17, 17, 2, 2, 32, "dense(1,1)"),

        // Combinations: causal + block-sparse, window + block-sparse, padding + block-sparse.
        new("f16", 1, 339, 339, 4, 4, 64, "causal+local(32,32,2,0)"),
        new("f16", 1, 203, 339, 2, 2, 128, "causal+random(16,16,2)"),
        new("bf16", 1, 1025, 1025, 2, 1, 64, "causal+strided(64,64,1,0,4)"),
        new("f16", 2, 113, 203, 4, 2, 32, "klen+local(16,16,1,1)"),
        new("bf16", 1, 203, 203, 2, 2, 64, "win(40,40)+custom(32,32)"),
        new("bf16", 2, 113, 339, 8, 1, 96, "qlen+klen+causal+randomh(16,32,2)"),
        new("f32", 2, 113, 339, 8, 1, 96, "qlen+klen+causal+randomh(16,32,2)"),
    ];

    /// <summary>Large cases, GPU vs the CPU engine only.</summary>
    private static readonly GpuCase[] LargeCases =
    [
        new("f16", 1, 8192, 8192, 2, 1, 128, "causal"),
        new("bf16", 1, 8192, 8192, 2, 2, 64, "none"),
        new("f16", 1, 16384, 16384, 1, 1, 128, "causal"),
        new("bf16", 1, 16384, 16384, 2, 1, 64, "causal+win(1024,0)"),
        new("f16", 1, 8192, 16384, 2, 2, 256, "strided(128,128,2,0,8)"),
        new("f32", 1, 8192, 8192, 1, 1, 64, "causal"),
    ];

    private CudaAttention _attention = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        _attention = new CudaAttention(Context, ForwardTestCompiler.Instance);
        TestContext.Out.WriteLine($"{Context.Device}, driver {CudaDevice.DriverVersion}");
    }

    [OneTimeTearDown]
    public void TearDown()
    {
        _attention?.Dispose();
    }

    private static IEnumerable<TestCaseData> Source() =>
        Cases.Select((c, i) => new TestCaseData(c, i).SetName($"GpuParity({c})"));

    private static IEnumerable<TestCaseData> LargeSource() =>
        LargeCases.Select((c, i) => new TestCaseData(c, 500 + i).SetName($"GpuParityLarge({c})"));

    [TestCaseSource(nameof(Source))]
    public void PlainThenTunedMatchReferenceAndCpu(GpuCase c, int index) => Dispatch(c, index, withReference: true);

    [TestCaseSource(nameof(LargeSource))]
    public void LargeMatchesCpu(GpuCase c, int index) => Dispatch(c, index, withReference: false);

    private void Dispatch(GpuCase c, int index, bool withReference)
    {
        switch (c.DType)
        {
            case "f32": Run<float>(c, index, withReference); break;
            case "f16": Run<Half>(c, index, withReference); break;
            case "bf16": Run<BFloat16>(c, index, withReference); break;
            default: Assert.Fail($"unknown dtype {c.DType}"); break;
        }
    }

    private void Run<T>(GpuCase c, int index, bool withReference) where T : unmanaged
    {
        var shape = new AttentionShape(c.B, c.Sq, c.Sk, c.H, c.Hkv, c.D);
        ulong seed = 2000 + (ulong)index;
        var inputs = AttentionInputs<T>.Random(shape, seed);
        var options = new AttentionOptions { Mask = MaskSpec.Build(c.Mask, shape, seed), Scale = c.Scale };
        var cpu = inputs.Run(options, c.Lse);
        // The double reference and the naive in-precision result are computed once per case (they dominate the time on
        // the CPU side) and every engine is checked against them.
        ReferenceResult? expected = withReference ? inputs.Reference(options, wantProbabilities: false) : null;
        float[]? naive = withReference && Num.IsHalfPrecision<T>()
            ? ReferenceAttention.NaiveForward<T>(Num.ToFloats<T>(inputs.Q), Num.ToFloats<T>(inputs.K), Num.ToFloats<T>(inputs.V), shape,
                options.ResolveScale(shape.HeadDim), options.Mask)
            : null;
        if (expected is not null)
        {
            AssertMatchesReference(cpu, expected, naive, inputs, $"{c} cpu");
        }
        // Without the naive result (large cases), the fp16/bf16 bound needs sum_j p_j |V_j| per output element: the CPU
        // engine over |V| (exact in every element type) gives it.
        float[]? weightedMagnitude = naive is null && Num.IsHalfPrecision<T>()
            ? new AttentionInputs<T> { Shape = shape, Q = inputs.Q, K = inputs.K, V = inputs.V.Select(x => Num.FromFloat<T>(MathF.Abs(Num.ToFloat(x)))).ToArray() }
                .Run(options, wantLse: false).Output
            : null;
        var variants = typeof(T) == typeof(float) ? new[] { CudaKernelVariant.Plain } : [CudaKernelVariant.Plain, CudaKernelVariant.Tuned];
        foreach (var variant in variants)
        {
            var gpu = RunGpu(inputs, options, c.Lse, variant);
            string label = $"{c} {_attention.LastKernelName}";
            if (variant == CudaKernelVariant.Tuned)
            {
                Assert.That(_attention.LastKernelName, Does.StartWith($"fa_fwd_hd{c.D}_"), "the tuned kernel ran");
            }
            if (expected is not null)
            {
                AssertMatchesReference(gpu, expected, naive, inputs, label);
            }
            AssertMatchesCpu(gpu, cpu, naive, weightedMagnitude, inputs, label);
        }
    }

    /// <summary>
    /// DESIGN.md's policy against the double reference (as AttentionInputs.AssertMatchesReference, with the reference
    /// and the naive result passed in): fp32 output and every LSE within 1e-5 + 1e-4·|ref|; fp16/bf16 output within
    /// 2x the naive in-precision error + 1e-5.
    /// </summary>
    private static void AssertMatchesReference<T>(EngineResult actual, ReferenceResult expected, float[]? naive, AttentionInputs<T> inputs, string label)
        where T : unmanaged
    {
        if (naive is not null)
        {
            Tolerance.AssertWithinNaive(actual.Output, expected.Output, naive, $"{label} output ({Num.Name<T>()})", inputs.OutputDims);
        }
        else
        {
            Tolerance.AssertClose(actual.Output, expected.Output, $"{label} output (fp32)", inputs.OutputDims);
        }
        if (actual.LogSumExp is not null)
        {
            Tolerance.AssertClose(actual.LogSumExp, expected.LogSumExp, $"{label} logSumExp", inputs.LseDims);
        }
    }

    /// <summary>
    /// GPU vs CPU engine. fp32: twice the fp32 policy. fp16/bf16 with <paramref name="naive"/>: the fp16/bf16 policy with
    /// the CPU result as the expected value (at most 2x the naive in-precision error), plus one ulp. Without it (large cases,
    /// where the naive computation is too slow), the bound of the rounding both engines do: both accumulate in fp32 and round
    /// the output once (at most u·|o| each, u the unit roundoff: 2^-11 fp16, 2^-8 bf16), and the tensor-core path also rounds
    /// each unnormalised probability to 16 bits before P·V (relative error at most u per weight, so at most
    /// u·sum_j p_j |V_j| on the output, <paramref name="weightedMagnitude"/>). Allowed: twice that,
    /// ulp·(sum_j p_j |V_j| + |cpu|) + 1e-5 with ulp = 2u. What it catches at scale: errors that move many weights (a
    /// wrong scale, a mis-merged split, a shifted mask band, an index overflow); a single wrong key in a long row can stay
    /// under it, which the small cases' checks against the double reference cover.
    /// </summary>
    private static void AssertMatchesCpu<T>(EngineResult gpu, EngineResult cpu, float[]? naive, float[]? weightedMagnitude,
        AttentionInputs<T> inputs, string label)
        where T : unmanaged
    {
        var expected = cpu.Output.Select(x => (double)x).ToArray();
        if (!Num.IsHalfPrecision<T>())
        {
            Tolerance.AssertClose(gpu.Output, expected, $"{label} output vs cpu", inputs.OutputDims, 2 * Tolerance.Fp32Abs, 2 * Tolerance.Fp32Rel);
        }
        else if (naive is not null)
        {
            // The fp16/bf16 policy with the CPU result as the expected value, plus one unit in the last place of |cpu|:
            // both outputs are rounded once from fp32 sums taken in different orders, so they may straddle a rounding
            // boundary even where the naive computation happens to match the CPU exactly (e.g. a zero scale).
            double naiveErr = 0;
            for (int i = 0; i < expected.Length; i++) naiveErr = Math.Max(naiveErr, Math.Abs(naive[i] - expected[i]));
            double ulp = typeof(T) == typeof(Half) ? 1.0 / 1024 : 1.0 / 128;
            var allowed = expected.Select(e => Tolerance.NaiveFactor * naiveErr + ulp * Math.Abs(e) + Tolerance.NaiveAbs).ToArray();
            Tolerance.AssertWithin(gpu.Output, expected, allowed, $"{label} output vs cpu", inputs.OutputDims);
        }
        else
        {
            double ulp = typeof(T) == typeof(Half) ? 1.0 / 1024 : 1.0 / 128;
            var allowed = expected.Select((e, i) => ulp * (weightedMagnitude![i] + Math.Abs(e)) + Tolerance.NaiveAbs).ToArray();
            Tolerance.AssertWithin(gpu.Output, expected, allowed, $"{label} output vs cpu", inputs.OutputDims);
        }
        if (gpu.LogSumExp is not null && cpu.LogSumExp is not null)
        {
            Tolerance.AssertClose(gpu.LogSumExp, cpu.LogSumExp.Select(x => (double)x).ToArray(), $"{label} logSumExp vs cpu",
                inputs.LseDims, 2 * Tolerance.Fp32Abs, 2 * Tolerance.Fp32Rel);
        }
    }

    /// <summary>Runs the GPU forward with NaN in every destination and in every padding row of the inputs.</summary>
    private EngineResult RunGpu<T>(AttentionInputs<T> inputs, AttentionOptions options, bool wantLse, CudaKernelVariant variant) where T : unmanaged
    {
        var s = inputs.Shape;
        var (q, k, v) = inputs.WithPoisonedPadding(options.Mask);
        using var dq = Upload(q, s.Batch, s.QueryLength, s.Heads, s.HeadDim);
        using var dk = Upload(k, s.Batch, s.KeyLength, s.KvHeads, s.HeadDim);
        using var dv = Upload(v, s.Batch, s.KeyLength, s.KvHeads, s.HeadDim);
        using var dO = Upload(Num.Filled<T>(s.Batch * s.QueryLength * s.Heads * s.HeadDim, float.NaN), s.Batch, s.QueryLength, s.Heads, s.HeadDim);
        using var dLse = wantLse ? DeviceTensor<float>.Allocate(Context, s.Batch, s.Heads, s.QueryLength) : null;
        dLse?.CopyFrom(Num.Filled<float>(s.Batch * s.Heads * s.QueryLength, float.NaN));
        _attention.Variant = variant;
        _attention.Forward(dq, dk, dv, dO, options, dLse);
        Context.Synchronize();
        var o = new T[dO.ElementCount];
        dO.CopyTo(o);
        float[]? lse = null;
        if (dLse is not null)
        {
            lse = new float[dLse.ElementCount];
            dLse.CopyTo(lse);
        }
        return new EngineResult(Num.ToFloats<T>(o), lse, null);
    }

    private DeviceTensor<T> Upload<T>(T[] data, int b, int s, int h, int d) where T : unmanaged
    {
        var t = DeviceTensor<T>.AllocateBshd(Context, b, s, h, d);
        t.CopyFrom(data);
        return t;
    }
}
