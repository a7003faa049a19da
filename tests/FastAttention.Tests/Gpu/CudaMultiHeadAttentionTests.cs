// GPU-only: CudaMultiHeadAttention.Forward against the CPU module and the double reference of the module with the same
// weights (self, cross, causal, window, block-sparse patterns, padding, GQA/MQA, bias on/off; fp32/fp16/bf16 under
// DESIGN.md's tolerance), weights loaded from the CPU module's files, strided and aliased activations, the bias kernel,
// no device allocation after warm-up, and bad input rejected before anything is queued.
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Cuda;
using FastAttention.Tests.Module;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

[TestFixture]
[Category("Gpu")]
public sealed class CudaMultiHeadAttentionTests : GpuFixture
{
    private static readonly ModuleCase[] Cases =
    [
        // Self-attention, dense: MHA / GQA / MQA, with and without biases, odd sizes; head dims 32, 64, 128.
        new("self MHA B2 S17 M128 H2 D64", 2, 17, null, 128, 2),
        new("self GQA B1 S113 M128 H4/2 D32 no bias", 1, 113, null, 128, 4, 2, Bias: false),
        new("self MQA B2 S1 M128 H4/1 D32", 2, 1, null, 128, 4, 1),
        new("self MHA B1 S203 M256 H2 D128 scale 0.05", 1, 203, null, 256, 2, Scale: 0.05f),
        new("self GQA B2 S17 M64 H8/2 D32 scale -0.1", 2, 17, null, 64, 8, 2, D: 32, Scale: -0.1f),

        // Cross-attention, Sq != Sk both ways.
        new("cross MHA Sq17 Sk113 M64 H2 D32", 2, 17, 113, 64, 2, D: 32),
        new("cross GQA Sq113 Sk17 M128 H4/2 D32 no bias", 1, 113, 17, 128, 4, 2, Bias: false),
        new("cross MQA Sq1 Sk17 M128 H4/1 D32", 3, 1, 17, 128, 4, 1),

        // Causal (bottom-right aligned), including rows that see no key.
        new("causal self GQA S113 M128 H4/2 D32", 2, 113, null, 128, 4, 2, Causal: true),
        new("causal cross Sq17 Sk113 MQA D64", 1, 17, 113, 128, 2, 1, Causal: true),
        new("causal cross Sq113 Sk17 (empty rows) D64", 2, 113, 17, 128, 2, Causal: true),
        new("causal self S1 no bias D64", 2, 1, null, 128, 2, Causal: true, Bias: false),

        // Sliding windows.
        new("window(5,3) self S113 MHA D32", 1, 113, null, 128, 4, WindowLeft: 5, WindowRight: 3),
        new("window(4,0)+causal self S113 GQA D32", 2, 113, null, 128, 4, 2, Causal: true, WindowLeft: 4, WindowRight: 0),
        new("window(-1,2) cross Sq17 Sk113 MQA D64", 1, 17, 113, 128, 2, 1, WindowLeft: -1, WindowRight: 2),

        // Block-sparse patterns (blocks of 64 on sequences of a few blocks).
        new("local bs64 l1 self S339 GQA D32", 1, 339, null, 128, 4, 2, Sparse: SparsePattern.Local, LocalBlocks: 1),
        new("strided bs64 l0 s2 self S339 causal D64", 1, 339, null, 128, 2, Causal: true, Sparse: SparsePattern.Strided, LocalBlocks: 0, Stride: 2),
        new("random bs64 r1 self S203 MHA D32 (per head)", 2, 203, null, 128, 4, Sparse: SparsePattern.Random, RandomBlocks: 1),

        // Padding.
        new("keyLengths self S17 B3 D32", 3, 17, null, 128, 4, 2, KeyLengths: "r"),
        new("queryLengths self S17 B3 D32", 3, 17, null, 128, 4, 2, QueryLengths: "r"),
        new("both lengths + causal self S113 B2 D64", 2, 113, null, 128, 2, Causal: true, KeyLengths: "r", QueryLengths: "r"),
        new("keyLengths with 0 cross Sq17 Sk113 B3 MQA D32", 3, 17, 113, 128, 4, 1, KeyLengths: "0"),
    ];

    /// <summary>Every case for fp32 (SIMT kernel), and for fp16/bf16 with the plain SIMT kernel and the tuned one.</summary>
    private static IEnumerable<TestCaseData> TypedCases() =>
        from t in Cases
        from type in new[] { KernelElementType.Float32, KernelElementType.Float16, KernelElementType.BFloat16 }
        from variant in type == KernelElementType.Float32 ? [CudaKernelVariant.Plain] : new[] { CudaKernelVariant.Plain, CudaKernelVariant.Tuned }
        select new TestCaseData(t, type, variant).SetName($"{t.Name} {type.Suffix()} {variant}");

    private static int[]? Lengths(string? spec, int batch, int max, Rng rng)
    {
        if (spec is null) return null;
        var r = new int[batch];
        for (int b = 0; b < batch; b++) r[b] = rng.Next(1, max);
        r[^1] = max;
        if (spec == "0") r[0] = 0;
        return r;
    }

    [TestCaseSource(nameof(TypedCases))]
    public void ForwardMatchesTheCpuModule(ModuleCase t, KernelElementType type, CudaKernelVariant variant)
    {
        switch (type)
        {
            case KernelElementType.Float32: Check<float>(t, variant); break;
            case KernelElementType.Float16: Check<Half>(t, variant); break;
            default: Check<BFloat16>(t, variant); break;
        }
    }

    private void Check<T>(ModuleCase t, CudaKernelVariant variant) where T : unmanaged
    {
        var c = t.Config();
        var w = GpuModuleSupport.Weights<T>(c, 1);
        var cpu = GpuModuleSupport.Cpu(c, w);
        int sk = t.Sk ?? t.Sq, model = c.ModelDim;
        var rng = new Rng(7);
        var x = GpuModuleSupport.Input<T>(t.B, t.Sq, model, 2);
        var ctx = t.Sk is null ? null : GpuModuleSupport.Input<T>(t.B, sk, model, 3);
        var kl = Lengths(t.KeyLengths, t.B, sk, rng);
        var ql = Lengths(t.QueryLengths, t.B, t.Sq, rng);

        using var gpu = GpuModuleSupport.Gpu<T>(Context, c, w);
        gpu.AttentionVariant = variant;
        using var xDev = GpuModuleSupport.Upload<T>(Context, x, t.B, t.Sq, model);
        using var ctxDev = ctx is null ? null : GpuModuleSupport.Upload<T>(Context, ctx, t.B, sk, model);
        using var yDev = GpuModuleSupport.Poisoned<T>(Context, t.B, t.Sq, model);
        gpu.Forward(xDev, yDev, ctxDev, kl, ql);
        float[] y = GpuModuleSupport.Download(yDev, gpu.Stream);

        string what = $"{t.Name} {Num.Name<T>()} {variant}";
        GpuModuleSupport.AssertModuleOutput<T>(y, cpu, x, t.B, t.Sq, ctx, sk, kl, ql, what + ": GPU vs double reference");
        if (typeof(T) == typeof(float))
        {
            var (cpuY, _) = ModuleData.Run(cpu, x, t.B, t.Sq, ctx, sk, kl, ql);
            ModuleData.AssertSame(y, cpuY, what + ": GPU vs CPU module", [t.B, t.Sq, model]);
        }

        // A second call on the warmed-up module (reused workspace and views) gives the same bits.
        using var yAgain = GpuModuleSupport.Poisoned<T>(Context, t.B, t.Sq, model);
        gpu.Forward(xDev, yAgain, ctxDev, kl, ql);
        Tolerance.AssertBitwiseEqual(GpuModuleSupport.Download(yAgain, gpu.Stream), y, what + ": second call", [t.B, t.Sq, model]);
    }

    [Test]
    public void PaddedQueryRowsOutputTheOutputBias()
    {
        var c = new AttentionConfig(128, 4, 2, causal: true);
        var w = GpuModuleSupport.Weights<float>(c, 11);
        using var gpu = GpuModuleSupport.Gpu<float>(Context, c, w);
        var x = GpuModuleSupport.Input<float>(2, 9, 128, 12);
        using var xDev = GpuModuleSupport.Upload<float>(Context, x, 2, 9, 128);
        using var yDev = GpuModuleSupport.Poisoned<float>(Context, 2, 9, 128);
        gpu.Forward(xDev, yDev, queryLengths: [3, 0]);
        float[] y = GpuModuleSupport.Download(yDev, gpu.Stream);
        for (int b = 0; b < 2; b++)
        {
            for (int i = b == 0 ? 3 : 0; i < 9; i++)
            {
                Assert.That(y.AsSpan((b * 9 + i) * 128, 128).ToArray(), Is.EqualTo(w[7]).Within(1e-6), $"row [{b}, {i}] must be the output bias");
            }
        }
    }

    [Test]
    public void WeightsFromACpuWeightFileGiveTheSameBitsAsSetWeights()
    {
        var c = new AttentionConfig(128, 4, 2, causal: true);
        var w = GpuModuleSupport.Weights<Half>(c, 13);
        var cpu = GpuModuleSupport.Cpu(c, w);
        using var file = new MemoryStream();
        cpu.SaveWeights(file);
        file.Position = 0;
        using var loaded = new CudaMultiHeadAttention<Half>(c, Context, compiler: ForwardTestCompiler.Instance);
        loaded.LoadWeights(file);
        using var set = GpuModuleSupport.Gpu<Half>(Context, c, w);
        var x = GpuModuleSupport.Input<Half>(2, 17, 128, 14);
        using var xDev = GpuModuleSupport.Upload<Half>(Context, x, 2, 17, 128);
        using var a = GpuModuleSupport.Poisoned<Half>(Context, 2, 17, 128);
        using var b = GpuModuleSupport.Poisoned<Half>(Context, 2, 17, 128);
        loaded.Forward(xDev, a);
        set.Forward(xDev, b);
        Tolerance.AssertBitwiseEqual(GpuModuleSupport.Download(a, loaded.Stream), GpuModuleSupport.Download(b, set.Stream), "LoadWeights vs SetWeights", [2, 17, 128]);
    }

    [Test]
    public void StridedSequenceMajorAndAliasedActivationsGiveTheContiguousResult()
    {
        // Input and context rows padded to 160 elements, output rows to 136 (padding must stay untouched); sequence-major
        // activations; then the output written over the input's own memory.
        var c = new AttentionConfig(128, 4, 2);
        var w = GpuModuleSupport.Weights<float>(c, 15);
        using var gpu = GpuModuleSupport.Gpu<float>(Context, c, w);
        int batch = 2, sq = 17, sk = 33;
        var x = GpuModuleSupport.Input<float>(batch, sq, 128, 16);
        var ctx = GpuModuleSupport.Input<float>(batch, sk, 128, 17);
        using var xDev = GpuModuleSupport.Upload<float>(Context, x, batch, sq, 128);
        using var ctxDev = GpuModuleSupport.Upload<float>(Context, ctx, batch, sk, 128);
        using var yDev = GpuModuleSupport.Poisoned<float>(Context, batch, sq, 128);
        gpu.Forward(xDev, yDev, ctxDev);
        float[] expected = GpuModuleSupport.Download(yDev, gpu.Stream);

        using var xPad = Padded(x, batch, sq, 160);
        using var ctxPad = Padded(ctx, batch, sk, 160);
        using var yPad = DeviceBuffer<float>.FromSpan(Context, Enumerable.Repeat(ModuleData.Sentinel, batch * sq * 136).ToArray());
        using var xView = DeviceTensor<float>.Wrap(Context, xPad.DevicePointer, [batch, sq, 128], [(nint)sq * 160, 160, 1]);
        using var ctxView = DeviceTensor<float>.Wrap(Context, ctxPad.DevicePointer, [batch, sk, 128], [(nint)sk * 160, 160, 1]);
        using var yView = DeviceTensor<float>.Wrap(Context, yPad.DevicePointer, [batch, sq, 128], [(nint)sq * 136, 136, 1]);
        gpu.Forward(xView, yView, ctxView);
        gpu.Stream.Synchronize();
        float[] padded = yPad.ToArray();
        var rows = new float[batch * sq * 128];
        for (int r = 0; r < batch * sq; r++)
        {
            Array.Copy(padded, r * 136, rows, r * 128, 128);
            Assert.That(padded.AsSpan(r * 136 + 128, 8).ToArray(), Is.All.EqualTo(ModuleData.Sentinel), $"padding of output row {r}");
        }
        // Another leading dimension may make cuBLAS pick another kernel: equal within the module tolerance, not bit for bit.
        ModuleData.AssertSame(rows, expected, "padded rows vs contiguous", [batch, sq, 128]);

        // A sequence-major [Sq, B, 128] input and output viewed as [B, Sq, 128] (strided-batched GEMMs, one per batch entry).
        var seqMajorHost = new float[sq * batch * 128];
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < sq; i++)
                Array.Copy(x, (b * sq + i) * 128, seqMajorHost, (i * batch + b) * 128, 128);
        using var xSeq = DeviceBuffer<float>.FromSpan(Context, seqMajorHost);
        using var ySeq = DeviceBuffer<float>.FromSpan(Context, Enumerable.Repeat(float.NaN, sq * batch * 128).ToArray());
        using var xSeqView = DeviceTensor<float>.Wrap(Context, xSeq.DevicePointer, [batch, sq, 128], [128, batch * 128, 1]);
        using var ySeqView = DeviceTensor<float>.Wrap(Context, ySeq.DevicePointer, [batch, sq, 128], [128, batch * 128, 1]);
        using var selfContiguous = GpuModuleSupport.Poisoned<float>(Context, batch, sq, 128);
        gpu.Forward(xDev, selfContiguous);
        float[] selfRows = GpuModuleSupport.Download(selfContiguous, gpu.Stream);
        gpu.Forward(xSeqView, ySeqView);
        gpu.Stream.Synchronize();
        float[] seqMajorOut = ySeq.ToArray();
        var seqRows = new float[batch * sq * 128];
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < sq; i++)
                Array.Copy(seqMajorOut, (i * batch + b) * 128, seqRows, (b * sq + i) * 128, 128);
        ModuleData.AssertSame(seqRows, selfRows, "sequence-major activations vs contiguous", [batch, sq, 128]);

        // Self-attention with the output over the input.
        using var selfOut = GpuModuleSupport.Poisoned<float>(Context, batch, sq, 128);
        gpu.Forward(xDev, selfOut);
        float[] selfExpected = GpuModuleSupport.Download(selfOut, gpu.Stream);
        using var inPlace = GpuModuleSupport.Upload<float>(Context, x, batch, sq, 128);
        gpu.Forward(inPlace, inPlace);
        Tolerance.AssertBitwiseEqual(GpuModuleSupport.Download(inPlace, gpu.Stream), selfExpected, "output aliasing the input", [batch, sq, 128]);
    }

    private DeviceBuffer<float> Padded(float[] rows, int batch, int seq, int ld)
    {
        var host = Enumerable.Repeat(float.NaN, batch * seq * ld).ToArray();
        for (int r = 0; r < batch * seq; r++) Array.Copy(rows, r * 128, host, r * ld, 128);
        return DeviceBuffer<float>.FromSpan(Context, host);
    }

    [Test]
    public void SteadyStateCallsAllocateNoDeviceMemory()
    {
        var c = new AttentionConfig(128, 4, 2, causal: true, sparse: SparsePattern.Local);
        var w = GpuModuleSupport.Weights<Half>(c, 18);
        using var gpu = GpuModuleSupport.Gpu<Half>(Context, c, w);
        using var xDev = GpuModuleSupport.Upload<Half>(Context, GpuModuleSupport.Input<Half>(2, 130, 128, 19), 2, 130, 128);
        using var small = GpuModuleSupport.Upload<Half>(Context, GpuModuleSupport.Input<Half>(1, 65, 128, 20), 1, 65, 128);
        using var yDev = GpuModuleSupport.Poisoned<Half>(Context, 2, 130, 128);
        using var ySmall = GpuModuleSupport.Poisoned<Half>(Context, 1, 65, 128);
        // Warm-up: both shapes once (kernels load, cuBLAS and the attention engine set up their buffers), then measure.
        gpu.Forward(xDev, yDev);
        gpu.Forward(small, ySmall);
        gpu.Stream.Synchronize();
        long workspace = gpu.WorkspaceBytes;
        long free = Context.GetMemoryInfo().FreeBytes;
        for (int i = 0; i < 5; i++)
        {
            gpu.Forward(xDev, yDev);
            gpu.Forward(small, ySmall);
        }
        gpu.Stream.Synchronize();
        Assert.That(gpu.WorkspaceBytes, Is.EqualTo(workspace), "the workspace does not change");
        Assert.That(Context.GetMemoryInfo().FreeBytes, Is.EqualTo(free), "no device memory was allocated after warm-up");
        Assert.That(workspace, Is.EqualTo((2L * 130 * (128 + 2 * 64) + 2L * 130 * 128) * 2), "projected [B·S, H·D + 2·Hkv·D] + attended [B·S, H·D], fp16");
    }

    [Test]
    public void BadInputThrowsBeforeAnythingIsQueued()
    {
        var c = new AttentionConfig(128, 4, 2);
        using var gpu = GpuModuleSupport.Gpu<float>(Context, c, GpuModuleSupport.Weights<float>(c, 21));
        using var x = GpuModuleSupport.Upload<float>(Context, GpuModuleSupport.Input<float>(2, 17, 128, 22), 2, 17, 128);
        using var y = DeviceTensor<float>.Allocate(Context, 2, 17, 128);
        y.CopyFrom(Enumerable.Repeat(ModuleData.Sentinel, 2 * 17 * 128).ToArray());
        using var wrongModel = DeviceTensor<float>.Allocate(Context, 2, 17, 96);
        using var wrongBatch = DeviceTensor<float>.Allocate(Context, 3, 9, 128);
        using var shortOutput = DeviceTensor<float>.Allocate(Context, 2, 16, 128);
        using var transposed = DeviceTensor<float>.Wrap(Context, x.DevicePointer, [2, 17, 128], [17 * 128, 1, 17]);
        using var probabilities = DeviceTensor<float>.Allocate(Context, 2, 4, 17, 17);

        Assert.That(() => gpu.Forward(wrongModel, y), Throws.ArgumentException.With.Property("ParamName").EqualTo("input").And.Message.Contains("got [2, 17, 96]"));
        Assert.That(() => gpu.Forward(x, shortOutput), Throws.ArgumentException.With.Property("ParamName").EqualTo("output"));
        Assert.That(() => gpu.Forward(x, y, wrongBatch), Throws.ArgumentException.With.Message.Contains("context batch 3 must equal input batch 2"));
        Assert.That(() => gpu.Forward(transposed, y), Throws.ArgumentException.With.Property("ParamName").EqualTo("input"));
        Assert.That(() => gpu.Forward(x, y, keyLengths: [17]), Throws.ArgumentException.With.Property("ParamName").EqualTo("keyLengths"));
        Assert.That(() => gpu.Forward(x, y, keyLengths: [17, 18]), Throws.InstanceOf<ArgumentException>().With.Property("ParamName").EqualTo("keyLengths"));
        Assert.That(() => gpu.Forward(x, y, queryLengths: [-1, 3]), Throws.InstanceOf<ArgumentException>().With.Property("ParamName").EqualTo("queryLengths"));
        Assert.That(() => gpu.Forward(x, y, probabilities: probabilities), Throws.TypeOf<NotSupportedException>().With.Message.Contains("CPU module"));
        Assert.That(() => gpu.SetWeights(new float[5], new float[5], new float[5], new float[5]), Throws.ArgumentException.With.Property("ParamName").EqualTo("query"));

        gpu.Stream.Synchronize();
        Assert.That(gpu.WorkspaceBytes, Is.Zero, "no workspace was allocated");
        var back = new float[2 * 17 * 128];
        y.CopyTo(back);
        Assert.That(back, Is.All.EqualTo(ModuleData.Sentinel), "nothing was written");
    }

    [Test]
    public void AHeadDimTheKernelsLackIsRejectedByTheConstructor()
    {
        Assert.That(() => new CudaMultiHeadAttention<Half>(new AttentionConfig(112, 2, headDim: 56), Context),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("config").And.Message.Contains("config.HeadDim = 56"));
        Assert.That(() => new CudaMultiHeadAttention<int>(new AttentionConfig(128, 2), Context), Throws.ArgumentException.With.Message.Contains("Int32"));
    }

    [Test]
    public void BiasKernelFillsEveryRowOfEveryGroupAndLeavesTheRestAlone()
    {
        // 2 groups (the matrices of a strided-batched GEMM) of 35000 rows: 70000 rows in all (> the 65535 grid rows, so the
        // grid-stride loop covers the rest), 40 columns of 48-wide rows, the second group 16 elements past the first's end.
        const int rowsPerGroup = 35000, groups = 2, cols = 40, ld = 48;
        const long groupStride = (long)rowsPerGroup * ld + 16;
        using var module = CudaModule.Load(Context, ForwardTestCompiler.Instance, KernelRegistry.Module(KernelElementType.BFloat16));
        CudaKernel kernel = module.GetKernel("fa_bias_rows_bf16");
        float[] biasValues = new Rng(23).Normal<float>(cols).Select(Num.Round<BFloat16>).ToArray();
        int length = (int)(groupStride * groups);
        using var bias = DeviceBuffer<BFloat16>.FromSpan(Context, Num.FromFloats<BFloat16>(biasValues));
        using var output = DeviceBuffer<BFloat16>.FromSpan(Context, Num.Filled<BFloat16>(length, ModuleData.Sentinel));
        using var stream = CudaStream.Create(Context);
        var (gx, gy, block) = MultiHeadPlan.BiasLaunch((long)rowsPerGroup * groups, cols);
        var args = new KernelArguments();
        args.Add(bias.DevicePointer);
        args.Add(output.DevicePointer);
        args.Add((long)rowsPerGroup * groups);
        args.Add(cols);
        args.Add((long)ld);
        args.Add((long)rowsPerGroup);
        args.Add(groupStride);
        kernel.Launch(new LaunchConfig(new Dim3(gx, gy), new Dim3(block)), stream, ref args);
        stream.Synchronize();
        float[] result = Num.ToFloats<BFloat16>(output.ToArray());
        float sentinel = Num.Round<BFloat16>(ModuleData.Sentinel);
        var expected = Enumerable.Repeat(sentinel, length).ToArray();
        for (int g = 0; g < groups; g++)
            for (int r = 0; r < rowsPerGroup; r++)
                for (int j = 0; j < cols; j++)
                    expected[g * groupStride + (long)r * ld + j] = biasValues[j];
        for (int e = 0; e < length; e++)
        {
            if (result[e] != expected[e]) Assert.Fail($"element {e} = {result[e]}, expected {expected[e]}");
        }
    }
}
