// GPU-only: incremental decode of CudaMultiHeadAttention over CudaKvCache and CudaPagedKvCache. Token by token over 256
// steps and in chunks, the stacked outputs equal the full causal prefill on the GPU and the CPU module (and meet the
// double reference under DESIGN.md's tolerance); paged sequences of different lengths, forks, sliding windows; unused
// cache slots hold NaN so a read of one fails; bad calls throw with nothing queued and the cache unchanged.
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Cuda;
using FastAttention.Tests.Module;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

[TestFixture]
[Category("Gpu")]
public sealed class CudaMultiHeadDecodeTests : GpuFixture
{
    private static readonly int[] TokenByToken = Enumerable.Repeat(1, 256).ToArray();
    private static readonly int[] Chunks = [1, 7, 3, 16, 64, 1, 100, 64];

    private static IEnumerable<TestCaseData> Schedules()
    {
        foreach (var type in new[] { KernelElementType.Float32, KernelElementType.Float16, KernelElementType.BFloat16 })
        {
            foreach (var kernel in new[] { DecodeKernel.Plain, DecodeKernel.Tuned })
            {
                yield return new TestCaseData(type, kernel, "token by token", TokenByToken).SetName($"256 steps of 1 token {type.Suffix()} {kernel}");
                yield return new TestCaseData(type, kernel, "chunks", Chunks).SetName($"chunks 1,7,3,16,64,1,100,64 {type.Suffix()} {kernel}");
            }
        }
    }

    [TestCaseSource(nameof(Schedules))]
    public void ContiguousCacheDecodeEqualsFullCausalPrefill(KernelElementType type, DecodeKernel kernel, string name, int[] schedule)
    {
        var c = new AttentionConfig(128, 4, 2, headDim: 64, causal: true);   // D = 64 (a GPU decode head dim), GQA 2
        switch (type)
        {
            case KernelElementType.Float32: ContiguousCase<float>(c, kernel, schedule, name); break;
            case KernelElementType.Float16: ContiguousCase<Half>(c, kernel, schedule, name); break;
            default: ContiguousCase<BFloat16>(c, kernel, schedule, name); break;
        }
    }

    [TestCase(KernelElementType.Float16)]
    [TestCase(KernelElementType.Float32)]
    public void WindowedMqaHeadDim128DecodeEqualsFullCausalPrefill(KernelElementType type)
    {
        var c = new AttentionConfig(256, 2, 1, causal: true, windowLeft: 6, bias: false);   // D = 128, MQA, window of 6 keys back
        if (type == KernelElementType.Float16) ContiguousCase<Half>(c, DecodeKernel.Tuned, Chunks, "window chunks");
        else ContiguousCase<float>(c, DecodeKernel.Tuned, Chunks, "window chunks");
    }

    private void ContiguousCase<T>(AttentionConfig c, DecodeKernel kernel, int[] schedule, string name) where T : unmanaged
    {
        int batch = 2, total = schedule.Sum(), model = c.ModelDim;
        var w = GpuModuleSupport.Weights<T>(c, 31);
        var cpu = GpuModuleSupport.Cpu(c, w);
        using var gpu = GpuModuleSupport.Gpu<T>(Context, c, w);
        gpu.DecodeOptions = new GpuDecodeOptions { Kernel = kernel };
        var x = GpuModuleSupport.Input<T>(batch, total, model, 32);
        using var xDev = GpuModuleSupport.Upload<T>(Context, x, batch, total, model);
        using var fullDev = GpuModuleSupport.Poisoned<T>(Context, batch, total, model);
        gpu.Forward(xDev, fullDev);
        float[] full = GpuModuleSupport.Download(fullDev, gpu.Stream);

        using var cache = new CudaKvCache<T>(Context, batch, total + 3, c.KvHeads, c.HeadDim);
        cache.KeyStorage.CopyFrom(Num.Filled<T>(checked((int)cache.KeyStorage.Length), float.NaN));
        cache.ValueStorage.CopyFrom(Num.Filled<T>(checked((int)cache.ValueStorage.Length), float.NaN));
        using var stackedDev = GpuModuleSupport.Poisoned<T>(Context, batch, total, model);
        int pos = 0;
        long workspace = -1;
        foreach (int n in schedule)
        {
            if (pos == 1) workspace = gpu.WorkspaceBytes;
            // The new tokens are read from, and their outputs written into, [B, n, modelDim] windows of the full tensors.
            using var xs = Window(xDev, batch, total, model, pos, n);
            using var ys = Window(stackedDev, batch, total, model, pos, n);
            gpu.Forward(xs, ys, cache);
            pos += n;
            Assert.That(cache.Lengths.ToArray(), Is.EqualTo(new[] { pos, pos }), "cache lengths after the step (host side, before the GPU finished)");
        }
        float[] stacked = GpuModuleSupport.Download(stackedDev, gpu.Stream);
        if (schedule.All(n => n == 1))
        {
            Assert.That(gpu.WorkspaceBytes, Is.EqualTo(workspace), "single-token steps reuse the first step's workspace");
        }

        string what = $"{name} {Num.Name<T>()} {kernel}";
        int[] dims = [batch, total, model];
        GpuModuleSupport.AssertModuleOutput<T>(stacked, cpu, x, batch, total, null, total, null, null, what + ": stacked decode vs double reference");
        GpuModuleSupport.AssertModuleOutput<T>(full, cpu, x, batch, total, null, total, null, null, what + ": full GPU prefill vs double reference");
        if (typeof(T) == typeof(float))
        {
            ModuleData.AssertSame(stacked, full, what + ": stacked decode vs full GPU prefill", dims);
            var (cpuFull, _) = ModuleData.Run(cpu, x, batch, total, null, total);
            ModuleData.AssertSame(stacked, cpuFull, what + ": stacked decode vs full CPU prefill", dims);
        }
    }

    /// <summary>Rows <c>[start, start + n)</c> of every sequence of a contiguous <c>[B, S, F]</c> tensor, as a <c>[B, n, F]</c> view.</summary>
    private DeviceTensor<T> Window<T>(DeviceTensor<T> t, int batch, int seq, int features, int start, int n) where T : unmanaged =>
        DeviceTensor<T>.Wrap(Context, t.DevicePointer + (nint)((long)start * features * System.Runtime.CompilerServices.Unsafe.SizeOf<T>()),
            [batch, n, features], [(nint)seq * features, features, 1]);

    [TestCase(KernelElementType.Float32, 16)]
    [TestCase(KernelElementType.Float16, 8)]
    [TestCase(KernelElementType.BFloat16, 32)]
    public void PagedSequencesOfDifferentLengthsEqualTheirFullCausalPrefill(KernelElementType type, int pageSize)
    {
        switch (type)
        {
            case KernelElementType.Float32: PagedCase<float>(pageSize); break;
            case KernelElementType.Float16: PagedCase<Half>(pageSize); break;
            default: PagedCase<BFloat16>(pageSize); break;
        }
    }

    private void PagedCase<T>(int pageSize) where T : unmanaged
    {
        // A prefilled with 5 tokens alone, B with 4 + 5 alone, C empty; then the batch [C, A, B] (not in id order) decodes
        // chunks 1, 7, 3, 16, 1, 1. A fork F of A after the prefill then decodes [A, F] with different tokens (the shared,
        // partly filled page is copied on write).
        var c = new AttentionConfig(128, 4, 2, headDim: 64, causal: true);
        int model = c.ModelDim;
        var w = GpuModuleSupport.Weights<T>(c, 33);
        var cpu = GpuModuleSupport.Cpu(c, w);
        using var gpu = GpuModuleSupport.Gpu<T>(Context, c, w);
        using var cache = new CudaPagedKvCache<T>(Context, 64, pageSize, c.KvHeads, c.HeadDim);
        cache.KeyPool.CopyFrom(Num.Filled<T>(checked((int)cache.KeyPool.Length), float.NaN));
        cache.ValuePool.CopyFrom(Num.Filled<T>(checked((int)cache.ValuePool.Length), float.NaN));
        int a = cache.CreateSequence(), b = cache.CreateSequence(), cs = cache.CreateSequence();
        var streams = new Dictionary<int, List<float>> { [a] = [], [b] = [], [cs] = [] };
        var outputs = new Dictionary<int, List<float>> { [a] = [], [b] = [], [cs] = [] };
        var rng = new Rng(34);

        void Step(int[] sequences, int n)
        {
            float[] xin = GpuModuleSupport.Round<T>(rng.Normal<float>(sequences.Length * n * model));
            using var xDev = GpuModuleSupport.Upload<T>(Context, xin, sequences.Length, n, model);
            using var yDev = GpuModuleSupport.Poisoned<T>(Context, sequences.Length, n, model);
            gpu.Forward(xDev, yDev, cache, sequences);
            float[] yout = GpuModuleSupport.Download(yDev, gpu.Stream);
            for (int i = 0; i < sequences.Length; i++)
            {
                streams[sequences[i]].AddRange(xin.AsSpan(i * n * model, n * model));
                outputs[sequences[i]].AddRange(yout.AsSpan(i * n * model, n * model));
            }
        }

        Step([a], 5);
        Step([b], 4);
        Step([b], 5);
        foreach (int n in new[] { 1, 7, 3, 16, 1, 1 }) Step([cs, a, b], n);
        int f = cache.Fork(a);
        streams[f] = [.. streams[a]];
        outputs[f] = [.. outputs[a]];
        foreach (int n in new[] { 1, 3, 1 }) Step([a, f], n);

        foreach (var (seq, name) in new[] { (a, "A"), (b, "B"), (cs, "C"), (f, "F = fork of A") })
        {
            float[] xs = streams[seq].ToArray();
            int len = xs.Length / model;
            Assert.That(cache.Length(seq), Is.EqualTo(len), $"sequence {name} length");
            using var xDev = GpuModuleSupport.Upload<T>(Context, xs, 1, len, model);
            using var fullDev = GpuModuleSupport.Poisoned<T>(Context, 1, len, model);
            gpu.Forward(xDev, fullDev);
            float[] full = GpuModuleSupport.Download(fullDev, gpu.Stream);
            float[] decoded = outputs[seq].ToArray();
            string what = $"page {pageSize} {Num.Name<T>()} sequence {name}";
            GpuModuleSupport.AssertModuleOutput<T>(decoded, cpu, xs, 1, len, null, len, null, null, what + ": stacked decode vs double reference");
            if (typeof(T) == typeof(float))
            {
                ModuleData.AssertSame(decoded, full, what + ": stacked decode vs full GPU prefill", [1, len, model]);
                var (cpuFull, _) = ModuleData.Run(cpu, xs, 1, len, null, len);
                ModuleData.AssertSame(decoded, cpuFull, what + ": stacked decode vs full CPU prefill", [1, len, model]);
            }
        }
    }

    [Test]
    public void BadDecodeCallsThrowWithNothingQueuedAndTheCacheUnchanged()
    {
        var c = new AttentionConfig(128, 4, 2, headDim: 64, causal: true);
        using var gpu = GpuModuleSupport.Gpu<float>(Context, c, GpuModuleSupport.Weights<float>(c, 35));
        using var cache = new CudaKvCache<float>(Context, 2, 8, 2, 64);
        using var x = GpuModuleSupport.Upload<float>(Context, GpuModuleSupport.Input<float>(2, 5, 128, 36), 2, 5, 128);
        using var y = DeviceTensor<float>.Allocate(Context, 2, 5, 128);
        y.CopyFrom(Enumerable.Repeat(ModuleData.Sentinel, 2 * 5 * 128).ToArray());
        gpu.Forward(x, y, cache);   // lengths 5 of 8
        gpu.Stream.Synchronize();
        long workspace = gpu.WorkspaceBytes;
        y.CopyFrom(Enumerable.Repeat(ModuleData.Sentinel, 2 * 5 * 128).ToArray());

        Assert.That(() => gpu.Forward(x, y, cache), Throws.ArgumentException.With.Property("ParamName").EqualTo("cache").And.Message.Contains("MaxSequenceLength 8"));
        using var wrongHeads = new CudaKvCache<float>(Context, 2, 8, 4, 64);
        Assert.That(() => gpu.Forward(x, y, wrongHeads), Throws.ArgumentException.With.Message.Contains("Hkv = 4, D = 64; the config needs Hkv = 2"));
        using var threeSequences = new CudaKvCache<float>(Context, 3, 8, 2, 64);
        Assert.That(() => gpu.Forward(x, y, threeSequences), Throws.ArgumentException.With.Message.Contains("input batch 2 must equal the cache batch 3"));
        using var sparse = new CudaMultiHeadAttention<float>(new AttentionConfig(128, 4, 2, headDim: 64, causal: true, sparse: SparsePattern.Local), Context, compiler: ForwardTestCompiler.Instance);
        Assert.That(() => sparse.Forward(x, y, cache), Throws.ArgumentException.With.Message.Contains("Block-sparse pattern Local is not supported with a KV cache"));

        using var paged = new CudaPagedKvCache<float>(Context, 1, 8, 2, 64);
        int s0 = paged.CreateSequence(), s1 = paged.CreateSequence();
        Assert.That(() => gpu.Forward(x, y, paged, [s0, s1]), Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("needs 2 free pages; the pool has 1 of 1"));
        using var x3 = GpuModuleSupport.Upload<float>(Context, GpuModuleSupport.Input<float>(2, 3, 128, 37), 2, 3, 128);
        using var y3 = DeviceTensor<float>.Allocate(Context, 2, 3, 128);
        Assert.That(() => gpu.Forward(x3, y3, paged, [s0, 99]), Throws.ArgumentException.With.Message.Contains("99"));
        Assert.That(() => gpu.Forward(x3, y3, paged, [s0, s0]), Throws.ArgumentException.With.Message.Contains("twice"));

        gpu.Stream.Synchronize();
        Assert.That(cache.Lengths.ToArray(), Is.EqualTo(new[] { 5, 5 }), "the contiguous cache is unchanged");
        Assert.That((paged.Length(s0), paged.Length(s1), paged.Allocator.FreePages), Is.EqualTo((0, 0, 1)), "the paged cache is unchanged");
        Assert.That(gpu.WorkspaceBytes, Is.EqualTo(workspace), "the workspace is unchanged");
        var back = new float[2 * 5 * 128];
        y.CopyTo(back);
        Assert.That(back, Is.All.EqualTo(ModuleData.Sentinel), "nothing was written");
    }

    [Test]
    public void AChunkPastTheDecodeGridIsRefusedBeforeTheAppend()
    {
        // D = 64, 2 query heads per KV head: one launch covers 65535 x 8 / 2 = 262140 new tokens; one more is refused
        // by the decode's own limits, which the module runs before projecting and appending.
        var c = new AttentionConfig(128, 2, 1, causal: true);
        const int n = DecodePlanner.MaxGridYz * DecodePlanner.RowsPerBlock / 2 + 1;
        using var gpu = GpuModuleSupport.Gpu<float>(Context, c, GpuModuleSupport.Weights<float>(c, 38));
        using var small = GpuModuleSupport.Upload<float>(Context, GpuModuleSupport.Input<float>(1, 3, 128, 39), 1, 3, 128);
        using var smallOut = DeviceTensor<float>.Allocate(Context, 1, 3, 128);
        using var big = DeviceTensor<float>.Allocate(Context, 1, n, 128);
        using var bigOut = DeviceTensor<float>.Allocate(Context, 1, n, 128);
        using var cache = new CudaKvCache<float>(Context, 1, n + 3, 1, 64);
        using var paged = new CudaPagedKvCache<float>(Context, (n + 3 + 255) / 256 + 1, 256, 1, 64);
        int s0 = paged.CreateSequence();
        gpu.Forward(small, smallOut, cache);
        gpu.Forward(small, smallOut, paged, [s0]);
        gpu.Stream.Synchronize();
        long workspace = gpu.WorkspaceBytes;
        int free = paged.Allocator.FreePages;

        string limit = $"{n} query rows x 2 heads per KV head";
        Assert.That(() => gpu.Forward(big, bigOut, cache), Throws.ArgumentException.With.Property("ParamName").EqualTo("input").And.Message.Contains(limit));
        Assert.That(() => gpu.Forward(big, bigOut, paged, [s0]), Throws.ArgumentException.With.Property("ParamName").EqualTo("input").And.Message.Contains(limit));

        gpu.Stream.Synchronize();
        Assert.That(cache.Lengths.ToArray(), Is.EqualTo(new[] { 3 }), "the contiguous cache is unchanged");
        Assert.That((paged.Length(s0), paged.Allocator.FreePages), Is.EqualTo((3, free)), "the paged cache is unchanged");
        Assert.That(gpu.WorkspaceBytes, Is.EqualTo(workspace), "the workspace did not grow: nothing was projected");
    }
}
