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
        Assert.That(l, Is.EqualTo(new ActivationLayout(2, 5, 24, 120)));
        Assert.That((l.Rows, l.Uniform), Is.EqualTo((10, true)));
    }

    [Test]
    public void PaddedRowsGiveTheirStride()
    {
        Assert.That(ActivationLayout.Of([3, 4, 24], [4 * 40, 40, 1], 24, "input"), Is.EqualTo(new ActivationLayout(3, 4, 40, 160)));
        // S = 1: rows are the batch entries, stride[1] is never used.
        Assert.That(ActivationLayout.Of([3, 1, 24], [32, 999, 1], 24, "input"), Is.EqualTo(new ActivationLayout(3, 1, 32, 32)));
        // B = 1: stride[0] is never used.
        Assert.That(ActivationLayout.Of([1, 4, 24], [7, 30, 1], 24, "input"), Is.EqualTo(new ActivationLayout(1, 4, 30, 120)));
        // B = S = 1: one row.
        Assert.That(ActivationLayout.Of([1, 1, 24], [0, 0, 1], 24, "input"), Is.EqualTo(new ActivationLayout(1, 1, 24, 24)));
        Assert.That(new[] { ActivationLayout.Of([3, 1, 24], [32, 999, 1], 24, "x"), ActivationLayout.Of([1, 4, 24], [7, 30, 1], 24, "x") }.All(l => l.Uniform));
    }

    [Test]
    public void WindowsAndSequenceMajorViewsAreBatchedLayouts()
    {
        // Rows [3, 3 + 5) of each sequence of a [2, 16, 24] tensor: batch stride 16·24, not 5·24.
        var window = ActivationLayout.Of([2, 5, 24], [16 * 24, 24, 1], 24, "input");
        Assert.That((window, window.Uniform), Is.EqualTo((new ActivationLayout(2, 5, 24, 384), false)));
        // A [S = 5, B = 3, 24] buffer viewed as [3, 5, 24]: rows of one batch entry are 3·24 apart, entries 24 apart.
        var sequenceMajor = ActivationLayout.Of([3, 5, 24], [24, 72, 1], 24, "input");
        Assert.That((sequenceMajor, sequenceMajor.Uniform), Is.EqualTo((new ActivationLayout(3, 5, 72, 24), false)));
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
        Assert.That(() => ActivationLayout.Of([2, 5, 24], [30, 48, 1], 24, "input"),
            Throws.ArgumentException.With.Message.Contains("rows overlap").And.Message.Contains("stride[0] >= (S-1)·stride[1] + F = 216")
                .And.Message.Contains("stride[1] >= (B-1)·stride[0] + F = 54"));
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
        var p = MultiHeadPlan.Forward(c, new ActivationLayout(2, 5, 40, 200), null, new ActivationLayout(2, 5, 32, 160));
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
        var p = MultiHeadPlan.Forward(c, new ActivationLayout(2, 3, 24, 72), new ActivationLayout(2, 7, 30, 210), new ActivationLayout(2, 3, 24, 72));
        Assert.That(p.Projections, Has.Length.EqualTo(2));
        Assert.That(p.Projections[1], Is.EqualTo(new ProjectionStep(PlanOperand.Context, 0, 30, PlanOperand.FusedWeight, 24, PlanOperand.Projected, 6 * 24, 24, 14, 24, 24)));
        Assert.That(p.Key, Is.EqualTo(new HeadView(6 * 24, 2, 7, 3, 4, 7 * 24, 24)));
        Assert.That(p.Value.Offset, Is.EqualTo(6 * 24 + 12));
        Assert.That(p.ProjectedElements, Is.EqualTo(6 * 24 + 14 * 24));
        Assert.That((p.SeqQ, p.SeqK, p.Cross), Is.EqualTo((3, 7, true)));
    }

    [Test]
    public void NonUniformActivationsGetStridedBatchedSteps()
    {
        var c = new AttentionConfig(32, 4, 2, 8);   // qw = 32, fused = 64
        var window = new ActivationLayout(2, 5, 40, 16 * 40);
        var seqMajor = new ActivationLayout(2, 5, 64, 32);
        var p = MultiHeadPlan.Forward(c, window, null, seqMajor);
        Assert.That(p.Projections[0], Is.EqualTo(new ProjectionStep(PlanOperand.Input, 0, 40, PlanOperand.FusedWeight, 0, PlanOperand.Projected, 0, 64, 5, 64, 32,
            Batches: 2, StrideA: 640, StrideC: 5 * 64)));
        Assert.That(p.OutputProjection, Is.EqualTo(new ProjectionStep(PlanOperand.Attended, 0, 32, PlanOperand.OutputWeight, 0, PlanOperand.Output, 0, 64, 5, 32, 32,
            Batches: 2, StrideA: 5 * 32, StrideC: 32)));
        Assert.That(p.Query, Is.EqualTo(new HeadView(0, 2, 5, 4, 8, 5 * 64, 64)), "the workspace stays contiguous");
    }

    /// <summary>
    /// fa_bias_rows' index arithmetic (module.cu), replayed on the host for the launch the module makes for a step: it
    /// writes exactly the rows of every matrix of the step's C, each once, and nothing else.
    /// </summary>
    [TestCase("uniform")]
    [TestCase("window")]
    [TestCase("sequence-major")]
    public void BiasKernelIndicesCoverExactlyTheStepsOutputRows(string layout)
    {
        var c = new AttentionConfig(32, 4, 2, 8);
        var output = layout switch
        {
            "uniform" => new ActivationLayout(3, 5, 40, 200),
            "window" => new ActivationLayout(3, 5, 32, 9 * 32),
            _ => new ActivationLayout(3, 5, 96, 32),
        };
        var step = MultiHeadPlan.Forward(c, new ActivationLayout(3, 5, 32, 160), null, output).OutputProjection;
        long rows = (long)step.M * step.Batches, rowsPerGroup = step.M, groupStride = step.StrideC, ld = step.Ldc;
        var (gx, gy, block) = MultiHeadPlan.BiasLaunch(rows, step.N);
        var written = new Dictionary<long, int>();
        for (long by = 0; by < gy; by++)
            for (long r = by; r < rows; r += gy)
            {
                long g = r / rowsPerGroup;
                long row = g * groupStride + (r - g * rowsPerGroup) * ld;
                for (long bx = 0; bx < gx; bx++)
                    for (long t = 0; t < block; t++)
                        for (long col = bx * block + t; col < step.N; col += gx * block)
                            written[row + col] = written.GetValueOrDefault(row + col) + 1;
            }
        var expected = new HashSet<long>();
        for (int i = 0; i < step.Batches; i++)
            for (int m = 0; m < step.M; m++)
                for (int n = 0; n < step.N; n++)
                    expected.Add(step.COffset + i * step.StrideC + (long)m * step.Ldc + n);
        Assert.That(written.Keys, Is.EquivalentTo(expected));
        Assert.That(written.Values, Is.All.EqualTo(1), "each element written once");
        var rowsOfOutput = new HashSet<long>();
        for (int b = 0; b < 3; b++)
            for (int i = 0; i < 5; i++)
                for (int j = 0; j < 32; j++)
                    rowsOfOutput.Add(b * output.BatchStride + (long)i * output.RowStride + j);
        Assert.That(expected, Is.EquivalentTo(rowsOfOutput), "the step's C is the output tensor's elements");
    }

    [Test]
    public void MismatchedBatchesOrOutputsAreRejected()
    {
        var c = new AttentionConfig(24, 4);
        Assert.That(() => MultiHeadPlan.Forward(c, new ActivationLayout(2, 3, 24, 72), new ActivationLayout(3, 7, 24, 168), new ActivationLayout(2, 3, 24, 72)),
            Throws.ArgumentException.With.Message.Contains("context batch 3 must equal input batch 2"));
        Assert.That(() => MultiHeadPlan.Forward(c, new ActivationLayout(2, 3, 24, 72), null, new ActivationLayout(2, 4, 24, 96)),
            Throws.ArgumentException.With.Message.Contains("output is [2, 4, ...]").And.Property("ParamName").EqualTo("output"));
    }

    [TestCase(1, 1)]
    [TestCase(17, 40)]
    [TestCase(70000, 256)]
    [TestCase(3, 257)]
    public void BiasLaunchCoversEveryElement(int rows, int cols)
    {
        var (gx, gy, block) = MultiHeadPlan.BiasLaunch(rows, cols);
        Assert.That(MultiHeadPlan.BiasLaunch(5_000_000_000L, cols).GridY, Is.EqualTo(65535u), "rows beyond int32 (all batches of a step)");
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
            foreach (string layout in new[] { "contiguous", "padded rows", "window", "sequence-major" })
            {
                yield return new TestCaseData(t, layout).SetName($"{t.Name}, {layout}");
            }
        }
    }

    /// <summary>
    /// The plan run on the host exactly as the GPU runs it (bias broadcast, GEMM with the planned leading dimensions and
    /// offsets into workspaces sized as planned and filled with NaN, attention through the planned strided views, output
    /// GEMM), on activations with padded rows: equals the CPU module. Proves every offset, stride and size of the plan.
    /// </summary>
    [TestCaseSource(nameof(HostCases))]
    public void PlanRunOnTheHostEqualsTheCpuModule(ModuleCase t, string layout)
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
        var xAct = Embed(x, t.B, t.Sq, model, layout);
        var ctxAct = ctx is null ? null : Embed(ctx, t.B, sk, model, layout);
        var yAct = Embed(ModuleData.Filled(t.B * t.Sq * model, ModuleData.Sentinel), t.B, t.Sq, model, layout);
        float[] xPadded = xAct.Data, y = yAct.Data;
        float[]? ctxPadded = ctxAct?.Data;
        Array.Fill(y, ModuleData.Sentinel);
        var plan = MultiHeadPlan.Forward(c, ActivationLayout.Of([t.B, t.Sq, model], xAct.Strides, model, "input"),
            ctxAct is null ? null : ActivationLayout.Of([t.B, sk, model], ctxAct.Strides, model, "context"),
            ActivationLayout.Of([t.B, t.Sq, model], yAct.Strides, model, "output"));
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
        int Base(PlanOperand o) => o switch
        {
            PlanOperand.Input => xAct.Offset,
            PlanOperand.Context => ctxAct!.Offset,
            PlanOperand.Output => yAct.Offset,
            _ => 0,
        };
        foreach (var step in plan.Projections) HostStep(step, Operand(step.A), Base(step.A), Operand(step.Weight), w.FusedBias, Operand(step.C), Base(step.C));

        var mask = ModuleReference.MaskOf(c, plan.SeqQ, plan.SeqK, kl, ql);
        var options = new AttentionOptions { Scale = c.Scale, Mask = mask };
        CpuAttention.Forward<float>(View(projected, plan.Query), View(projected, plan.Key), View(projected, plan.Value),
            TensorLayouts.Bshd(attended.AsSpan(), t.B, t.Sq, c.Heads, c.HeadDim), options);
        HostStep(plan.OutputProjection, attended, 0, w.Output, w.OutputBias, y, yAct.Offset);

        var written = new bool[y.Length];
        var result = new float[t.B * t.Sq * model];
        for (int b = 0; b < t.B; b++)
            for (int i = 0; i < t.Sq; i++)
                for (int j = 0; j < model; j++)
                {
                    long at = b * yAct.Strides[0] + i * yAct.Strides[1] + yAct.Offset + j;
                    written[at] = true;
                    result[(b * t.Sq + i) * model + j] = y[at];
                }
        for (int e = 0; e < y.Length; e++)
        {
            if (!written[e]) Assert.That(y[e], Is.EqualTo(ModuleData.Sentinel), $"output element {e} outside the tensor must stay untouched");
        }
        ModuleData.AssertSame(result, expected, $"{t.Name}: plan on host ({layout}) vs CPU module", [t.B, t.Sq, model]);
    }

    /// <summary>A host copy of <c>[B, S, F]</c> rows in a layout; other elements NaN. <see cref="Offset"/> is where element [0, 0, 0] lies.</summary>
    private sealed record Embedded(float[] Data, nint[] Strides, int Offset);

    private static Embedded Embed(float[] rows, int batch, int seq, int features, string layout)
    {
        // "window": the rows are [2, 2 + S) of sequences of length S + 5; "sequence-major": an [S, B, F] buffer.
        (nint[] strides, int offset, int length) = layout switch
        {
            "contiguous" => (new nint[] { (nint)seq * features, features, 1 }, 0, batch * seq * features),
            "padded rows" => (new nint[] { (nint)seq * (features + 5), features + 5, 1 }, 0, batch * seq * (features + 5)),
            "window" => (new nint[] { (nint)(seq + 5) * features, features, 1 }, 2 * features, batch * (seq + 5) * features),
            _ => (new nint[] { features, (nint)batch * features, 1 }, 0, batch * seq * features),
        };
        var data = ModuleData.Filled(length, float.NaN);
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < seq; i++)
                Array.Copy(rows, (b * seq + i) * features, data, offset + b * strides[0] + i * strides[1], features);
        return new Embedded(data, strides, offset);
    }

    /// <summary>
    /// What the GPU does for a step: broadcast the bias rows into each C (beta = 1), then C_i += A_i · W[rows]ᵀ, row-major.
    /// <paramref name="aBase"/> and <paramref name="cBase"/> are where the operands' element 0 lies in the host arrays.
    /// </summary>
    private static void HostStep(ProjectionStep s, float[] a, int aBase, float[] weight, float[] bias, float[] c, int cBase)
    {
        bool withBias = bias.Length > 0;
        for (int i = 0; i < s.Batches; i++)
        {
            for (int m = 0; m < s.M; m++)
            {
                for (int n = 0; n < s.N; n++)
                {
                    long ci = cBase + s.COffset + i * s.StrideC + (long)m * s.Ldc + n;
                    double sum = withBias ? bias[s.WeightRow + n] : 0;
                    for (int k = 0; k < s.K; k++)
                    {
                        sum += (double)a[aBase + s.AOffset + i * s.StrideA + (long)m * s.Lda + k] * weight[(long)(s.WeightRow + n) * s.K + k];
                    }
                    c[ci] = (float)sum;
                }
            }
        }
    }

    private static TensorSpan<float> View(float[] workspace, HeadView v)
    {
        Assert.That(v.Offset + v.Extent, Is.LessThanOrEqualTo(workspace.Length), "view inside the workspace");
        return TensorLayouts.View(workspace.AsSpan((int)v.Offset), v.Lengths, v.Strides);
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
