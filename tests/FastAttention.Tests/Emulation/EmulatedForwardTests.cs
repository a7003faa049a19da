// The attention forward kernels (attention_fwd.cu tuned, attention_fwd_simt.cu plain) run on the kernel emulator
// through the real host planner (AttentionForwardPlanner: kernel choice, grid, packed parameters, block-sparse tile
// lists), compared with the CPU engine and the double reference under DESIGN.md section 4, as GpuForwardParityTests
// does on a GPU. Small shapes only (the emulator runs every thread on the CPU). Padding rows of Q/K/V and every
// destination hold NaN, and the buffers' guard zones are checked, so a kernel that reads or writes outside its
// rows fails.
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Gpu;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Emulation;

[TestFixture]
[Category("Emulated")]
public sealed class EmulatedForwardTests
{
    private static readonly GpuCase[] Cases =
    [
        // Every head dim of the tuned kernel, odd lengths, Sq != Sk both ways, GQA and MQA.
        new("f16", 1, 17, 113, 2, 1, 32, "none"),
        new("bf16", 1, 113, 17, 2, 2, 64, "none"),
        new("f16", 1, 2, 65, 4, 2, 80, "none"),
        new("bf16", 2, 33, 70, 2, 1, 96, "none"),
        new("f16", 1, 129, 67, 2, 2, 128, "none", Lse: false),
        new("bf16", 1, 40, 97, 2, 2, 256, "none"),
        new("f16", 1, 1, 1, 1, 1, 64, "none"),
        new("f16", 1, 70, 70, 2, 2, 64, "none", Scale: -0.4f),
        new("bf16", 1, 17, 33, 2, 1, 32, "none", Scale: 0f),
        new("f32", 2, 17, 113, 4, 4, 32, "none"),
        new("f32", 1, 1, 2, 8, 1, 96, "none"),

        // Causal (bottom-right aligned both ways), windows, causal + window.
        new("f16", 1, 113, 113, 2, 1, 64, "causal"),
        new("bf16", 1, 17, 203, 2, 2, 128, "causal"),
        new("f16", 1, 203, 17, 2, 2, 96, "causal"),
        new("bf16", 1, 130, 130, 1, 1, 256, "causal"),
        new("f16", 1, 113, 203, 2, 2, 80, "win(16,0)"),
        new("bf16", 1, 70, 65, 2, 1, 32, "win(-1,8)"),
        new("f16", 1, 129, 129, 2, 2, 64, "causal+win(31,0)"),
        new("bf16", 1, 17, 17, 2, 2, 128, "win(0,0)"),
        new("f32", 1, 113, 113, 4, 2, 64, "causal"),

        // Per-sequence key and query lengths.
        new("f16", 3, 33, 70, 4, 2, 64, "klen"),
        new("bf16", 2, 70, 33, 2, 1, 128, "qlen+klen+causal"),
        new("f16", 3, 2, 17, 2, 2, 96, "klen0"),
        new("bf16", 3, 17, 17, 2, 1, 32, "qlen0+causal"),
        new("f32", 2, 40, 33, 2, 2, 32, "qlen+klen"),

        // Block-sparse layouts.
        new("f16", 1, 129, 129, 2, 2, 64, "local(32,32,1,0)"),
        new("bf16", 1, 113, 70, 2, 1, 128, "strided(16,16,1,0,4)"),
        new("f16", 1, 70, 113, 4, 2, 32, "random(16,16,2)"),
        new("bf16", 1, 65, 97, 2, 2, 80, "randomh(8,16,3)"),
        new("f16", 1, 40, 40, 2, 2, 96, "custom(1,1)"),
        new("bf16", 1, 129, 129, 2, 2, 64, "causal+local(32,32,2,0)"),
        new("f16", 2, 33, 70, 2, 1, 64, "qlen+klen+causal+randomh(16,32,2)"),
        new("f32", 1, 65, 40, 2, 2, 32, "custom(16,16)"),
    ];

    private static IEnumerable<TestCaseData> Source() =>
        Cases.Select((c, i) => new TestCaseData(c, i).SetName($"EmulatedForward({c})"));

    [OneTimeSetUp]
    public void RequireEmulator() => KernelEmulator.Require();

    [TestCaseSource(nameof(Source))]
    public void PlainThenTunedMatchReferenceAndCpu(GpuCase c, int index)
    {
        switch (c.DType)
        {
            case "f32": Run<float>(c, index); break;
            case "f16": Run<Half>(c, index); break;
            default: Run<BFloat16>(c, index); break;
        }
    }

    private static void Run<T>(GpuCase c, int index) where T : unmanaged
    {
        var shape = new AttentionShape(c.B, c.Sq, c.Sk, c.H, c.Hkv, c.D);
        ulong seed = 7000 + (ulong)index;
        var inputs = AttentionInputs<T>.Random(shape, seed);
        var options = new AttentionOptions { Mask = MaskSpec.Build(c.Mask, shape, seed), Scale = c.Scale };
        var cpu = inputs.Run(options, c.Lse);
        float[]? naive = Num.IsHalfPrecision<T>()
            ? ReferenceAttention.NaiveForward<T>(Num.ToFloats<T>(inputs.Q), Num.ToFloats<T>(inputs.K), Num.ToFloats<T>(inputs.V), shape,
                options.ResolveScale(shape.HeadDim), options.Mask)
            : null;
        var variants = typeof(T) == typeof(float) ? new[] { CudaKernelVariant.Plain } : [CudaKernelVariant.Plain, CudaKernelVariant.Tuned];
        foreach (var variant in variants)
        {
            var (result, kernel) = RunEmulated(inputs, options, c.Lse, variant);
            string label = $"{c} {kernel} (emulated)";
            if (variant == CudaKernelVariant.Tuned)
            {
                Assert.That(kernel, Does.StartWith($"fa_fwd_hd{c.D}_"), "the tuned kernel ran");
            }
            inputs.AssertMatchesReference(result, options, label);
            var expected = cpu.Output.Select(x => (double)x).ToArray();
            if (naive is null)
            {
                Tolerance.AssertClose(result.Output, expected, $"{label} output vs cpu", inputs.OutputDims, 2 * Tolerance.Fp32Abs, 2 * Tolerance.Fp32Rel);
            }
            else
            {
                Tolerance.AssertWithinNaive(result.Output, expected, naive, $"{label} output vs cpu", inputs.OutputDims);
            }
            if (result.LogSumExp is not null && cpu.LogSumExp is not null)
            {
                Tolerance.AssertClose(result.LogSumExp, cpu.LogSumExp.Select(x => (double)x).ToArray(), $"{label} logSumExp vs cpu",
                    inputs.LseDims, 2 * Tolerance.Fp32Abs, 2 * Tolerance.Fp32Rel);
            }
        }
    }

    /// <summary>Plans with the real planner, then runs the planned kernel on the emulator with NaN in every destination and padding row.</summary>
    private static (EngineResult Result, string Kernel) RunEmulated<T>(AttentionInputs<T> inputs, AttentionOptions options, bool wantLse,
        CudaKernelVariant variant) where T : unmanaged
    {
        var s = inputs.Shape;
        var (q, k, v) = inputs.WithPoisonedPadding(options.Mask);
        using var dq = new HostBuffer<T>(q);
        using var dk = new HostBuffer<T>(k);
        using var dv = new HostBuffer<T>(v);
        using var dO = new HostBuffer<T>(Num.Filled<T>(s.Batch * s.QueryLength * s.Heads * s.HeadDim, float.NaN));
        using var dLse = wantLse ? new HostBuffer<float>(Num.Filled<float>(s.Batch * s.Heads * s.QueryLength, float.NaN)) : null;
        var plan = AttentionForwardPlanner.Plan(KernelElementTypes.Of<T>(),
            Bshd(dq.Pointer, s.Batch, s.QueryLength, s.Heads, s.HeadDim), Bshd(dk.Pointer, s.Batch, s.KeyLength, s.KvHeads, s.HeadDim),
            Bshd(dv.Pointer, s.Batch, s.KeyLength, s.KvHeads, s.HeadDim), Bshd(dO.Pointer, s.Batch, s.QueryLength, s.Heads, s.HeadDim),
            dLse is null ? null : new TensorDesc(dLse.Pointer, [s.Batch, s.Heads, s.QueryLength], [(nint)s.Heads * s.QueryLength, s.QueryLength, 1]),
            options, variant);
        using var tables = new HostBuffer<int>(plan.Tables);
        EmulatedModule module = KernelEmulator.Load(plan.Specialization);
        var args = new KernelArguments();
        args.Add(plan.WithTables(plan.Tables.Length > 0 ? tables.Pointer : 0));
        module.Launch(plan.KernelName, plan.Launch, ref args);
        dq.Check("q");
        dk.Check("k");
        dv.Check("v");
        dO.Check("output");
        dLse?.Check("logSumExp");
        tables.Check("tables");
        return (new EngineResult(Num.ToFloats<T>(dO.Span), dLse?.ToArray(), null), plan.KernelName);
    }

    private static TensorDesc Bshd(nint pointer, int b, int s, int h, int d) =>
        new(pointer, [b, s, h, d], [(nint)s * h * d, (nint)h * d, d, 1]);
}
