// CPU-only tests of the GPU module's host logic: activation layouts, the planned GEMMs and Q/K/V views (executed on
// the host with a plain GEMM and the CPU attention engine, they must reproduce the CPU module exactly as the GPU would
// run them), workspace sizes, the bias-broadcast launch, and reading the CPU module's weights and weight files.
using FastAttention.Gpu;
using FastAttention.Tests.Module;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class MultiHeadPlanTests
{
    // ---- Activation layouts ----

    [Test]
    public void ContiguousActivationsHaveRowStrideModelDim()
    {
        var l = ActivationLayout.Of([2, 5, 24], [120, 24, 1], 24, "input");
        Assert.That(l, Is.EqualTo(new ActivationLayout(2, 5, 24)));
        Assert.That(l.Rows, Is.EqualTo(10));
    }

    [Test]
    public void PaddedRowsGiveTheirStride()
    {
        Assert.That(ActivationLayout.Of([3, 4, 24], [4 * 40, 40, 1], 24, "input").RowStride, Is.EqualTo(40));
        // S = 1: rows are the batch entries, stride[1] is never used.
        Assert.That(ActivationLayout.Of([3, 1, 24], [32, 999, 1], 24, "input").RowStride, Is.EqualTo(32));
        // B = 1: stride[0] is never used.
        Assert.That(ActivationLayout.Of([1, 4, 24], [7, 30, 1], 24, "input").RowStride, Is.EqualTo(30));
        // B = S = 1: one row.
        Assert.That(ActivationLayout.Of([1, 1, 24], [0, 0, 1], 24, "input").RowStride, Is.EqualTo(24));
    }

    [Test]
    public void BadActivationLayoutsNameTheTensorAndTheNumbers()
    {
        Assert.That(() => ActivationLayout.Of([2, 5, 25], [125, 25, 1], 24, "context"),
            Throws.ArgumentException.With.Message.Contains("context must be [B >= 1, S >= 1, 24], got [2, 5, 25]").And.Property("ParamName").EqualTo("context"));
        Assert.That(() => ActivationLayout.Of([0, 5, 24], [120, 24, 1], 24, "input"), Throws.ArgumentException.With.Message.Contains("got [0, 5, 24]"));
        Assert.That(() => ActivationLayout.Of([2, 5, 24, 1], [120, 24, 1, 1], 24, "input"), Throws.ArgumentException.With.Message.Contains("got [2, 5, 24, 1]"));
        Assert.That(() => ActivationLayout.Of([2, 5, 24], [240, 48, 2], 24, "output"),
            Throws.ArgumentException.With.Message.Contains("unit stride").And.Message.Contains("[240, 48, 2]"));
        Assert.That(() => ActivationLayout.Of([2, 5, 24], [24, 48, 1], 24, "input"),
            Throws.ArgumentException.With.Message.Contains("not uniformly spaced").And.Message.Contains("stride[0] = S·stride[1] = 240"));
        Assert.That(() => ActivationLayout.Of([2, 5, 24], [100, 20, 1], 24, "output"),
            Throws.ArgumentException.With.Message.Contains("row stride of 20").And.Message.Contains("[24, "));
        // A [B, H, S, D]-style transposed view is not a row matrix.
        Assert.That(() => ActivationLayout.Of([2, 5, 24], [120, 1, 5], 24, "input"), Throws.ArgumentException);
    }

    // ---- Plans ----

    [Test]
    public void SelfPlanIsOneFusedGemmWithInPlaceViews()
    {
        var c = new AttentionConfig(32, 4, 2, 8);   // qw = 32, kw = 16, fused = 64
        var p = MultiHeadPlan.Forward(c, new ActivationLayout(2, 5, 40), null, new ActivationLayout(2, 5, 32));
        Assert.That(p.Projections, Has.Length.EqualTo(1));
        Assert.That(p.Projections[0], Is.EqualTo(new ProjectionStep(PlanOperand.Input, 0, 40, PlanOperand.FusedWeight, 0, PlanOperand.Projected, 0, 64, 10, 64, 32)));
        Assert.That(p.Query, Is.EqualTo(new HeadView(0, 2, 5, 4, 8, 5 * 64, 64)));
        Assert.That(p.Key, Is.EqualTo(new HeadView(32, 2, 5, 2, 8, 5 * 64, 64)));
        Assert.That(p.Value, Is.EqualTo(new HeadView(48, 2, 5, 2, 8, 5 * 64, 64)));
        Assert.That(p.OutputProjection, Is.EqualTo(new ProjectionStep(PlanOperand.Attended, 0, 32, PlanOperand.OutputWeight, 0, PlanOperand.Output, 0, 32, 10, 32, 32)));
        Assert.That((p.ProjectedElements, p.AttendedElements), Is.EqualTo((10L * 64, 10L * 32)));
        Assert.That(p.Value.Offset + p.Value.Extent, Is.EqualTo(p.ProjectedElements), "V's last element is the workspace's last");
    }

    [Test]
    public void CrossPlanProjectsQueriesAndKeyValuesSeparately()
    {
        var c = new AttentionConfig(24, 6, 3, 4);   // qw = 24, kw = 12
        var p = MultiHeadPlan.Forward(c, new ActivationLayout(2, 3, 24), new ActivationLayout(2, 7, 30), new ActivationLayout(2, 3, 24));
        Assert.That(p.Projections, Has.Length.EqualTo(2));
        Assert.That(p.Projections[1], Is.EqualTo(new ProjectionStep(PlanOperand.Context, 0, 30, PlanOperand.FusedWeight, 24, PlanOperand.Projected, 6 * 24, 24, 14, 24, 24)));
        Assert.That(p.Key, Is.EqualTo(new HeadView(6 * 24, 2, 7, 3, 4, 7 * 24, 24)));
        Assert.That(p.Value.Offset, Is.EqualTo(6 * 24 + 12));
        Assert.That(p.ProjectedElements, Is.EqualTo(6 * 24 + 14 * 24));
        Assert.That((p.SeqQ, p.SeqK, p.Cross), Is.EqualTo((3, 7, true)));
    }

    [Test]
    public void MismatchedBatchesOrOutputsAreRejected()
    {
        var c = new AttentionConfig(24, 4);
        Assert.That(() => MultiHeadPlan.Forward(c, new ActivationLayout(2, 3, 24), new ActivationLayout(3, 7, 24), new ActivationLayout(2, 3, 24)),
            Throws.ArgumentException.With.Message.Contains("context batch 3 must equal input batch 2"));
        Assert.That(() => MultiHeadPlan.Forward(c, new ActivationLayout(2, 3, 24), null, new ActivationLayout(2, 4, 24)),
            Throws.ArgumentException.With.Message.Contains("output is [2, 4, ...]").And.Property("ParamName").EqualTo("output"));
    }

    [TestCase(1, 1)]
    [TestCase(17, 40)]
    [TestCase(70000, 256)]
    [TestCase(3, 257)]
    public void BiasLaunchCoversEveryElement(int rows, int cols)
    {
        var (gx, gy, block) = MultiHeadPlan.BiasLaunch(rows, cols);
        Assert.That(block, Is.EqualTo(256));
        Assert.That((long)gx * block, Is.GreaterThanOrEqualTo(cols));
        Assert.That((long)(gx - 1) * block, Is.LessThan(cols), "no block is wholly idle in x");
        Assert.That(gy, Is.InRange(1u, 65535u));
        Assert.That(gy, Is.EqualTo(Math.Min(rows, 65535)), "y covers the rows directly up to the grid limit, grid-stride beyond");
    }

    private static IEnumerable<TestCaseData> HostCases()
    {
        foreach (ModuleCase t in new ModuleCase[]
        {
            new("self MHA B2 S17 M32 H4", 2, 17, null, 32, 4),
            new("self GQA B1 S113 M48 H4/2 no bias", 1, 113, null, 48, 4, 2, Bias: false),
            new("self MQA B2 S1 M24 H3/1", 2, 1, null, 24, 3, 1),
            new("cross MHA Sq17 Sk113 M40 H6 D7", 2, 17, 113, 40, 6, D: 7),
            new("cross GQA Sq113 Sk17 M32 H4/2 causal", 1, 113, 17, 32, 4, 2, Causal: true),
            new("self causal window GQA S33", 2, 33, null, 32, 4, 2, Causal: true, WindowLeft: 5, WindowRight: 0),
            new("self local bs8 S40 padded", 3, 40, null, 24, 2, Sparse: SparsePattern.Local, BlockSize: 8, KeyLengths: "r", QueryLengths: "r"),
        })
        {
            foreach (int pad in new[] { 0, 5 })
            {
                yield return new TestCaseData(t, pad).SetName($"{t.Name}, row padding {pad}");
            }
        }
    }

    /// <summary>
    /// The plan run on the host exactly as the GPU runs it (bias broadcast, GEMM with the planned leading dimensions and
    /// offsets into workspaces sized as planned and filled with NaN, attention through the planned strided views, output
    /// GEMM), on activations with padded rows: equals the CPU module. Proves every offset, stride and size of the plan.
    /// </summary>
    [TestCaseSource(nameof(HostCases))]
    public void PlanRunOnTheHostEqualsTheCpuModule(ModuleCase t, int pad)
    {
        var c = t.Config();
        var cpu = ModuleData.Create(c, 1);
        int sk = t.Sk ?? t.Sq, model = c.ModelDim;
        var x = ModuleData.Input(t.B, t.Sq, model, 2);
        var ctx = t.Sk is null ? null : ModuleData.Input(t.B, sk, model, 3);
        var rng = new Rng(4);
        int[]? kl = t.KeyLengths is null ? null : Enumerable.Range(0, t.B).Select(b => b == t.B - 1 ? sk : rng.Next(1, sk)).ToArray();
        int[]? ql = t.QueryLengths is null ? null : Enumerable.Range(0, t.B).Select(b => b == t.B - 1 ? t.Sq : rng.Next(0, t.Sq)).ToArray();
        var (expected, _) = ModuleData.Run(cpu, x, t.B, t.Sq, ctx, sk, kl, ql);

        var w = MultiHeadWeights.FromParts(c, cpu.QueryWeight, cpu.KeyWeight, cpu.ValueWeight, cpu.OutputWeight,
            cpu.QueryBias, cpu.KeyBias, cpu.ValueBias, cpu.OutputBias);
        int ld = model + pad;
        float[] xPadded = PadRows(x, t.B * t.Sq, model, ld);
        float[]? ctxPadded = ctx is null ? null : PadRows(ctx, t.B * sk, model, ld);
        float[] y = ModuleData.Filled(t.B * t.Sq * ld, ModuleData.Sentinel);
        var plan = MultiHeadPlan.Forward(c, ActivationLayout.Of([t.B, t.Sq, model], [(nint)t.Sq * ld, ld, 1], model, "input"),
            ctxPadded is null ? null : ActivationLayout.Of([t.B, sk, model], [(nint)sk * ld, ld, 1], model, "context"),
            ActivationLayout.Of([t.B, t.Sq, model], [(nint)t.Sq * ld, ld, 1], model, "output"));
        float[] projected = ModuleData.Filled(checked((int)plan.ProjectedElements), float.NaN);
        float[] attended = ModuleData.Filled(checked((int)plan.AttendedElements), float.NaN);

        float[] Operand(PlanOperand o) => o switch
        {
            PlanOperand.Input => xPadded,
            PlanOperand.Context => ctxPadded!,
            PlanOperand.Projected => projected,
            PlanOperand.Attended => attended,
            PlanOperand.Output => y,
            PlanOperand.FusedWeight => w.Fused,
            _ => w.Output,
        };
        foreach (var step in plan.Projections) HostStep(step, Operand(step.A), Operand(step.Weight), w.FusedBias, Operand(step.C));

        var mask = ModuleReference.MaskOf(c, plan.SeqQ, plan.SeqK, kl, ql);
        var options = new AttentionOptions { Scale = c.Scale, Mask = mask };
        CpuAttention.Forward<float>(View(projected, plan.Query), View(projected, plan.Key), View(projected, plan.Value),
            TensorLayouts.Bshd(attended.AsSpan(), t.B, t.Sq, c.Heads, c.HeadDim), options);
        HostStep(plan.OutputProjection, attended, w.Output, w.OutputBias, y);

        for (int r = 0; r < t.B * t.Sq; r++)
        {
            for (int j = model; j < ld; j++)
            {
                Assert.That(y[r * ld + j], Is.EqualTo(ModuleData.Sentinel), $"row {r} padding column {j} must stay untouched");
            }
        }
        ModuleData.AssertSame(UnpadRows(y, t.B * t.Sq, model, ld), expected, $"{t.Name}: plan on host vs CPU module", [t.B, t.Sq, model]);
    }

    /// <summary>What the GPU does for a step: broadcast the bias rows into C (beta = 1), then C += A · W[rows]ᵀ, row-major.</summary>
    private static void HostStep(ProjectionStep s, float[] a, float[] weight, float[] bias, float[] c)
    {
        bool withBias = bias.Length > 0;
        for (int m = 0; m < s.M; m++)
        {
            for (int n = 0; n < s.N; n++)
            {
                long ci = s.COffset + (long)m * s.Ldc + n;
                double sum = withBias ? bias[s.WeightRow + n] : 0;
                for (int k = 0; k < s.K; k++)
                {
                    sum += (double)a[s.AOffset + (long)m * s.Lda + k] * weight[(long)(s.WeightRow + n) * s.K + k];
                }
                c[ci] = (float)sum;
            }
        }
    }

    private static TensorSpan<float> View(float[] workspace, HeadView v)
    {
        Assert.That(v.Offset + v.Extent, Is.LessThanOrEqualTo(workspace.Length), "view inside the workspace");
        return TensorLayouts.View(workspace.AsSpan((int)v.Offset), v.Lengths, v.Strides);
    }

    private static float[] PadRows(float[] a, int rows, int cols, int ld)
    {
        var r = ModuleData.Filled(rows * ld, float.NaN);
        for (int i = 0; i < rows; i++) Array.Copy(a, i * cols, r, i * ld, cols);
        return r;
    }

    private static float[] UnpadRows(float[] a, int rows, int cols, int ld)
    {
        var r = new float[rows * cols];
        for (int i = 0; i < rows; i++) Array.Copy(a, i * ld, r, i * cols, cols);
        return r;
    }

    // ---- Weights ----

    [TestCase(true)]
    [TestCase(false)]
    public void WeightFilesOfTheCpuModuleReadBitForBit(bool bias)
    {
        var c = new AttentionConfig(24, 4, 2, 5, bias: bias);
        var cpu = ModuleData.Create(c, 5);
        using var file = new MemoryStream();
        cpu.SaveWeights(file);
        file.Position = 0;
        var w = MultiHeadWeights.Read(c, file);
        Assert.That(file.Position, Is.EqualTo(file.Length), "the whole file is read");
        Assert.That(w.Fused, Is.EqualTo(cpu.QueryWeight.ToArray().Concat(cpu.KeyWeight.ToArray()).Concat(cpu.ValueWeight.ToArray()).ToArray()));
        Assert.That(w.Output, Is.EqualTo(cpu.OutputWeight.ToArray()));
        Assert.That(w.FusedBias, Is.EqualTo(cpu.QueryBias.ToArray().Concat(cpu.KeyBias.ToArray()).Concat(cpu.ValueBias.ToArray()).ToArray()));
        Assert.That(w.OutputBias, Is.EqualTo(cpu.OutputBias.ToArray()));
        Assert.That(w.FusedBias, Has.Length.EqualTo(bias ? 4 * 5 + 2 * 2 * 5 : 0));
    }

    [Test]
    public void BadWeightFilesAreRejected()
    {
        var c = new AttentionConfig(24, 4, 2, 5);
        var cpu = ModuleData.Create(new AttentionConfig(24, 4, 4, 5), 6);
        using var other = new MemoryStream();
        cpu.SaveWeights(other);
        other.Position = 0;
        Assert.That(() => MultiHeadWeights.Read(c, other),
            Throws.TypeOf<InvalidDataException>().With.Message.Contains("(24, 4, 4, 5, 1) differ from the module's (24, 4, 2, 5, 1)"));
        Assert.That(() => MultiHeadWeights.Read(c, new MemoryStream([1, 2, 3, 4, 5, 6, 7, 8])), Throws.TypeOf<InvalidDataException>().With.Message.Contains("bad magic"));
        var good = new MemoryStream();
        ModuleData.Create(c, 7).SaveWeights(good);
        var truncated = new MemoryStream(good.ToArray()[..^4]);
        Assert.That(() => MultiHeadWeights.Read(c, truncated), Throws.TypeOf<InvalidDataException>().With.Message.Contains("ends early"));
    }

    [Test]
    public void WrongWeightLengthsNameTheWeightAndTheNumbers()
    {
        var c = new AttentionConfig(24, 4, 2, 5);
        var w = ModuleData.RandomWeights(c, 8);
        Assert.That(() => MultiHeadWeights.FromParts(c, w[0], w[1][1..], w[2], w[3], w[4], w[5], w[6], w[7]),
            Throws.ArgumentException.With.Message.Contains("key has 239 elements; expected 240 ([Hkv·D = 10, modelDim = 24])").And.Property("ParamName").EqualTo("key"));
        Assert.That(() => MultiHeadWeights.FromParts(c, w[0], w[1], w[2], w[3], w[4], w[5], w[6], default),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("outputBias"));
        var noBias = new AttentionConfig(24, 4, 2, 5, bias: false);
        Assert.That(() => MultiHeadWeights.FromParts(noBias, w[0], w[1], w[2], w[3], w[4], default, default, default),
            Throws.ArgumentException.With.Message.Contains("empty (config has no bias)"));
    }
}
