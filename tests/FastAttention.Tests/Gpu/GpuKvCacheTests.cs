// Device paged cache: copy-on-write fork then batched append, all-or-nothing capacity, the [B, n, Hkv, D] append
// overload on a non-blocking stream, and argument errors raised before any work.
using FastAttention.Cpu.Caching;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Caching;
using FastAttention.Tests.Cuda;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

public sealed class GpuKvCacheTests : GpuFixture
{
    private const int Hkv = 2, D = 64, Page = 16;

    [Test]
    public void ForkThenBatchedAppendCopiesTheSharedPageAndMatchesTheCpuCache()
    {
        var rng = new Rng(41);
        var cpu = new PagedKvCache<BFloat16>(12, Page, Hkv, D);
        using var gpu = new CudaPagedKvCache<BFloat16>(Context, 12, Page, Hkv, D);
        int a = cpu.CreateSequence();
        Assert.That(gpu.CreateSequence(), Is.EqualTo(a));
        var ha = new TokenHistory<BFloat16>(Hkv, D);
        var k0 = rng.Normal<BFloat16>(37 * Hkv * D);
        var v0 = rng.Normal<BFloat16>(37 * Hkv * D);
        ha.Add(k0, v0);
        GpuCacheSupport.AppendBoth(cpu, gpu, [a], [37], [k0], [v0]);
        int b = cpu.Fork(a);
        Assert.That(gpu.Fork(a), Is.EqualTo(b));
        var hb = ha.Clone();
        // Both append in one batch: a copies the shared, partially filled third page; b (the last sharer) writes in place.
        var ka = rng.Normal<BFloat16>(5 * Hkv * D);
        var va = rng.Normal<BFloat16>(5 * Hkv * D);
        var kb = rng.Normal<BFloat16>(30 * Hkv * D);
        var vb = rng.Normal<BFloat16>(30 * Hkv * D);
        int shared = gpu.Allocator.BlockTable(a)[2];
        GpuCacheSupport.AppendBoth(cpu, gpu, [a, b], [5, 30], [ka, kb], [va, vb]);
        ha.Add(ka, va);
        hb.Add(kb, vb);
        Assert.That(gpu.Allocator.BlockTable(a)[2], Is.Not.EqualTo(shared), "a got a private copy");
        Assert.That(gpu.Allocator.BlockTable(b)[2], Is.EqualTo(shared), "b kept the page");
        Assert.That(CacheTestSupport.Snapshot(gpu.Allocator), Is.EqualTo(CacheTestSupport.Snapshot(cpu.Allocator)));
        foreach (var (seq, h) in new[] { (a, ha), (b, hb) })
        {
            var (k, v) = GpuCacheSupport.ReadBack(gpu, seq);
            CacheTestSupport.AssertSameBits<BFloat16>(k, h.Keys, $"keys of sequence {seq}");
            CacheTestSupport.AssertSameBits<BFloat16>(v, h.Values, $"values of sequence {seq}");
        }
        GpuCacheSupport.PoisonUnused(gpu);
        var query = rng.Normal<BFloat16>(2 * 4 * D);
        var options = new AttentionOptions { Mask = AttentionMask.CausalMask };
        var (o, l) = GpuCacheSupport.Decode(gpu, [a, b], query, 1, 4, options, GpuDecodeOptions.Default);
        CacheTestSupport.AssertMatchesReference(o, l, query, [ha, hb], 1, 4, options, "GPU decode after fork + append");
    }

    [Test]
    public void ABatchThatDoesNotFitChangesNeitherTheAllocatorNorThePools()
    {
        var rng = new Rng(8);
        using var gpu = new CudaPagedKvCache<float>(Context, 6, Page, Hkv, D);
        int s0 = gpu.CreateSequence(), s1 = gpu.CreateSequence();
        var (o0, k0, v0) = GpuCacheSupport.UploadInterleaved(Context, rng.Normal<float>(40 * Hkv * D), rng.Normal<float>(40 * Hkv * D), 40, Hkv, D);
        using (o0) gpu.Append([s0], [40], k0, v0);
        Context.Synchronize();
        string before = CacheTestSupport.Snapshot(gpu.Allocator);
        var keys = gpu.KeyPool.ToArray();
        var values = gpu.ValuePool.ToArray();
        // 3 free pages; s0 needs 1 more (40 -> 60 tokens), s1 needs 3 (45 tokens).
        var (o1, k1, v1) = GpuCacheSupport.UploadInterleaved(Context, rng.Normal<float>(65 * Hkv * D), rng.Normal<float>(65 * Hkv * D), 65, Hkv, D);
        using (o1)
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => gpu.Append([s0, s1], [20, 45], k1, v1))!;
            Assert.That(e.Message, Does.Contain("needs 4 free pages").And.Contain("has 3 of 6"));
        }
        Context.Synchronize();
        Assert.That(CacheTestSupport.Snapshot(gpu.Allocator), Is.EqualTo(before));
        CacheTestSupport.AssertSameBits<float>(gpu.KeyPool.ToArray(), keys, "key pool after the refused batch");
        CacheTestSupport.AssertSameBits<float>(gpu.ValuePool.ToArray(), values, "value pool after the refused batch");
    }

    [Test]
    public void BatchedAppendOnANonBlockingStreamWritesEveryEntry()
    {
        var rng = new Rng(12);
        using var stream = CudaStream.Create(Context);
        using var gpu = new CudaPagedKvCache<Half>(Context, 40, 8, Hkv, D);
        int[] ids = [gpu.CreateSequence(), gpu.CreateSequence(), gpu.CreateSequence()];
        var histories = ids.Select(_ => new TokenHistory<Half>(Hkv, D)).ToArray();
        foreach (int n in new[] { 3, 8, 13, 1 })
        {
            var k = rng.Normal<Half>(ids.Length * n * Hkv * D);
            var v = rng.Normal<Half>(ids.Length * n * Hkv * D);
            for (int b = 0; b < ids.Length; b++)
            {
                int size = n * Hkv * D;
                histories[b].Add(k[(b * size)..((b + 1) * size)], v[(b * size)..((b + 1) * size)]);
            }
            using var kt = GpuCacheSupport.Upload(Context, k, ids.Length, n, Hkv, D);
            using var vt = GpuCacheSupport.Upload(Context, v, ids.Length, n, Hkv, D);
            gpu.Append(ids, kt, vt, stream);
            stream.Synchronize();
        }
        for (int b = 0; b < ids.Length; b++)
        {
            Assert.That(gpu.Length(ids[b]), Is.EqualTo(25));
            var (k, v) = GpuCacheSupport.ReadBack(gpu, ids[b]);
            CacheTestSupport.AssertSameBits<Half>(k, histories[b].Keys, $"keys of sequence {b}");
            CacheTestSupport.AssertSameBits<Half>(v, histories[b].Values, $"values of sequence {b}");
        }
    }

    [Test]
    public void BadArgumentsThrowBeforeAnyWork()
    {
        using var gpu = new CudaPagedKvCache<Half>(Context, 8, Page, Hkv, D);
        int s = gpu.CreateSequence();
        var (owner, k, v) = GpuCacheSupport.UploadInterleaved(Context, new Half[3 * Hkv * D], new Half[3 * Hkv * D], 3, Hkv, D);
        using (owner) gpu.Append([s], [3], k, v);
        Context.Synchronize();
        string before = CacheTestSupport.Snapshot(gpu.Allocator);

        using var q = DeviceTensor<Half>.Allocate(Context, 1, 1, 4, D);
        using var o = DeviceTensor<Half>.Allocate(Context, 1, 1, 4, D);
        using var wrongHeads = DeviceTensor<Half>.Allocate(Context, 1, 1, 3, D);
        using var wideRows = DeviceTensor<Half>.Allocate(Context, 8 * Hkv * D + 8);
        Assert.That(Assert.Throws<ArgumentException>(() => CudaDecode.Decode(wrongHeads, gpu, [s], wrongHeads))!.ParamName, Is.EqualTo("query"));
        Assert.That(Assert.Throws<ArgumentException>(() => CudaDecode.Decode(q, gpu, [s, s], o))!.ParamName, Is.EqualTo("query"));
        Assert.That(Assert.Throws<ArgumentException>(() => CudaDecode.Decode(q, gpu, [99], o))!.ParamName, Is.EqualTo("sequences"));
        Assert.That(Assert.Throws<ArgumentException>(() => CudaDecode.Decode(q, gpu, [s], wrongHeads))!.ParamName, Is.EqualTo("output"));
        var lengths = new AttentionOptions { Mask = new AttentionMask { KeyLengths = [1] } };
        Assert.That(Assert.Throws<ArgumentException>(() => CudaDecode.Decode(q, gpu, [s], o, lengths))!.ParamName, Is.EqualTo("options"));
        using var transposed = DeviceTensor<Half>.Wrap(Context, q.DevicePointer, [1, 1, 4, D], [4 * D, 4 * D, 1, 4]);
        Assert.That(Assert.Throws<ArgumentException>(() => CudaDecode.Decode(transposed, gpu, [s], o))!.ParamName, Is.EqualTo("query"));
        using var lse = DeviceTensor<float>.Allocate(Context, 1, 1, 4);
        Assert.That(Assert.Throws<ArgumentException>(() => CudaDecode.Decode(q, gpu, [s], o, null, lse))!.ParamName, Is.EqualTo("logSumExp"));

        // Token rows 8 elements (16 bytes) apart are fine; 4 apart (8 bytes) are not; a misaligned start is not.
        using var misStrided = DeviceTensor<Half>.Wrap(Context, wideRows.DevicePointer, [2, Hkv, D], [Hkv * D + 4, D, 1]);
        Assert.That(Assert.Throws<ArgumentException>(() => gpu.Append([s], [2], misStrided, misStrided))!.ParamName, Is.EqualTo("key"));
        using var misAligned = DeviceTensor<Half>.Wrap(Context, wideRows.DevicePointer + 2, [2, Hkv, D], [Hkv * D, D, 1]);
        Assert.That(Assert.Throws<ArgumentException>(() => gpu.Append([s], [2], misAligned, misAligned))!.ParamName, Is.EqualTo("key"));
        using var aligned = DeviceTensor<Half>.Wrap(Context, wideRows.DevicePointer, [2, Hkv, D], [Hkv * D + 8, D, 1]);
        using var other = DeviceTensor<Half>.Wrap(Context, wideRows.DevicePointer, [2, Hkv, D], [Hkv * D, D, 1]);
        Assert.That(Assert.Throws<ArgumentException>(() => gpu.Append([s], [2], aligned, other))!.ParamName, Is.EqualTo("value"));
        Assert.That(Assert.Throws<ArgumentException>(() => gpu.Append([s], [3], aligned, aligned))!.ParamName, Is.EqualTo("key"), "N must be the counts' sum");
        Assert.That(Assert.Throws<ArgumentException>(() => gpu.Append([s, s], [1, 1], aligned, aligned))!.ParamName, Is.EqualTo("sequences"));
        Assert.That(CacheTestSupport.Snapshot(gpu.Allocator), Is.EqualTo(before));

        Assert.That(Assert.Throws<ArgumentException>(() => new CudaPagedKvCache<Half>(Context, 4, 16, 1, 80))!.ParamName, Is.EqualTo("headDim"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new CudaPagedKvCache<Half>(Context, 4, 12, 1, 64))!.ParamName, Is.EqualTo("pageSize"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => new CudaPagedKvCache<Half>(Context, 4, 512, 1, 64))!.ParamName, Is.EqualTo("pageSize"));
    }
}
