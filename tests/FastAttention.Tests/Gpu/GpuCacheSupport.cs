// Shared pieces of the GPU cache tests: device uploads, a CPU PagedKvCache and a CudaPagedKvCache driven through the
// same operations (so their allocators, block tables and pools agree), NaN poisoning and read-back of device pools.
using FastAttention.Caching;
using FastAttention.Cpu.Caching;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

internal static class GpuCacheSupport
{
    public static DeviceTensor<T> Upload<T>(CudaContext context, T[] data, params nint[] lengths) where T : unmanaged
    {
        var t = DeviceTensor<T>.Allocate(context, lengths);
        t.CopyFrom(data);
        return t;
    }

    /// <summary>
    /// New tokens <c>[n, Hkv, D]</c> the way a fused projection gives them: K and V interleaved per token in one buffer
    /// <c>[n, 2, Hkv, D]</c>, so both views have token stride 2·Hkv·D. Returns the owning buffer and the two views.
    /// </summary>
    public static (DeviceTensor<T> Owner, DeviceTensor<T> Key, DeviceTensor<T> Value) UploadInterleaved<T>(CudaContext context, T[] keys, T[] values,
        int n, int hkv, int d) where T : unmanaged
    {
        int row = hkv * d;
        var packed = new T[Math.Max(1, 2 * n * row)];
        for (int t = 0; t < n; t++)
        {
            Array.Copy(keys, t * row, packed, 2 * t * row, row);
            Array.Copy(values, t * row, packed, (2 * t + 1) * row, row);
        }
        var owner = DeviceTensor<T>.Allocate(context, packed.Length);
        owner.CopyFrom(packed);
        nint size = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        nint[] lengths = [n, hkv, d], strides = [2 * row, d, 1];
        return (owner, DeviceTensor<T>.Wrap(context, owner.DevicePointer, lengths, strides),
            DeviceTensor<T>.Wrap(context, owner.DevicePointer + row * size, lengths, strides));
    }

    /// <summary>Appends a ragged batch to both caches: CPU one sequence after another, GPU in one call.</summary>
    public static void AppendBoth<T>(PagedKvCache<T> cpu, CudaPagedKvCache<T> gpu, int[] ids, int[] counts, T[][] keys, T[][] values)
        where T : unmanaged
    {
        int hkv = gpu.KvHeads, d = gpu.HeadDim, row = hkv * d;
        for (int b = 0; b < ids.Length; b++)
        {
            cpu.Append(ids[b], Views.Strided(keys[b], [counts[b], hkv, d], [row, d, 1]), Views.Strided(values[b], [counts[b], hkv, d], [row, d, 1]));
        }
        var allKeys = keys.SelectMany(k => k).ToArray();
        var allValues = values.SelectMany(v => v).ToArray();
        int total = counts.Sum();
        var (owner, key, value) = UploadInterleaved(gpu.Context, allKeys, allValues, total, hkv, d);
        using (owner)
        {
            gpu.Append(ids, counts, key, value);
            gpu.Context.Synchronize();
        }
    }

    /// <summary>
    /// A CPU and a GPU paged cache holding the histories in scrambled pages: random batches of random chunks appended
    /// to both in one GPU call each, while filler sequences take and return pages. Both allocators see the same calls.
    /// </summary>
    public static (PagedKvCache<T> Cpu, CudaPagedKvCache<T> Gpu, int[] Ids) BuildMirrored<T>(CudaContext context, TokenHistory<T>[] histories,
        int pageSize, Rng rng) where T : unmanaged
    {
        int batch = histories.Length, hkv = histories[0].KvHeads, d = histories[0].HeadDim;
        int pages = histories.Sum(h => (h.Length + pageSize - 1) / pageSize) + 12;
        var cpu = new PagedKvCache<T>(pages, pageSize, hkv, d);
        cpu.KeyStorage.Fill(Num.FromFloat<T>(float.NaN));
        cpu.ValueStorage.Fill(Num.FromFloat<T>(float.NaN));
        var gpu = new CudaPagedKvCache<T>(context, pages, pageSize, hkv, d);
        var fillers = new List<int>();
        void Filler()
        {
            int f = cpu.CreateSequence();
            Assert.That(gpu.CreateSequence(), Is.EqualTo(f));
            fillers.Add(f);
            int n = rng.Next(1, 2 * pageSize);
            var junk = rng.Normal<T>(n * hkv * d, 50);
            AppendBoth(cpu, gpu, [f], [n], [junk], [junk]);
        }
        Filler();
        Filler();
        var ids = histories.Select(_ =>
        {
            int id = cpu.CreateSequence();
            Assert.That(gpu.CreateSequence(), Is.EqualTo(id));
            return id;
        }).ToArray();
        var done = new int[batch];
        while (Enumerable.Range(0, batch).Any(b => done[b] < histories[b].Length))
        {
            if (rng.NextBool(0.15))
            {
                if (fillers.Count < 3) Filler();
                else
                {
                    int i = rng.Next(0, fillers.Count - 1);
                    cpu.Free(fillers[i]);
                    gpu.Free(fillers[i]);
                    fillers.RemoveAt(i);
                }
                continue;
            }
            var pick = Enumerable.Range(0, batch).Where(b => done[b] < histories[b].Length && rng.NextBool(0.6)).ToArray();
            if (pick.Length == 0) continue;
            var counts = pick.Select(b => Math.Min(histories[b].Length - done[b], rng.Next(1, Math.Max(2 * pageSize, histories[b].Length / 6)))).ToArray();
            AppendBoth(cpu, gpu, [.. pick.Select(b => ids[b])], counts,
                [.. pick.Select((b, i) => histories[b].Slice(true, done[b], counts[i]))],
                [.. pick.Select((b, i) => histories[b].Slice(false, done[b], counts[i]))]);
            for (int i = 0; i < pick.Length; i++) done[pick[i]] += counts[i];
        }
        foreach (int f in fillers)
        {
            cpu.Free(f);
            gpu.Free(f);
        }
        Assert.That(CacheTestSupport.Snapshot(gpu.Allocator), Is.EqualTo(CacheTestSupport.Snapshot(cpu.Allocator)), "mirrored allocators");
        return (cpu, gpu, ids);
    }

    /// <summary>Downloads both pools, fills every slot no live sequence uses with NaN, uploads them again.</summary>
    public static void PoisonUnused<T>(CudaPagedKvCache<T> cache) where T : unmanaged
    {
        var keys = cache.KeyPool.ToArray();
        var values = cache.ValuePool.ToArray();
        T nan = Num.FromFloat<T>(float.NaN);
        int ps = cache.PageSize, d = cache.HeadDim;
        var used = CacheTestSupport.UsedSlots(cache.Allocator);
        for (int page = 0; page < used.Length; page++)
        {
            for (int h = 0; h < cache.KvHeads; h++)
            {
                long row0 = ((long)h * used.Length + page) * ps;
                int from = (int)((row0 + used[page]) * d), to = (int)((row0 + ps) * d);
                keys.AsSpan(from, to - from).Fill(nan);
                values.AsSpan(from, to - from).Fill(nan);
            }
        }
        cache.KeyPool.CopyFrom(keys);
        cache.ValuePool.CopyFrom(values);
    }

    /// <summary>Reads a sequence back from the device pools through its block table, <c>[L, Hkv, D]</c>.</summary>
    public static (T[] Keys, T[] Values) ReadBack<T>(CudaPagedKvCache<T> cache, int sequence) where T : unmanaged
    {
        var keys = cache.KeyPool.ToArray();
        var values = cache.ValuePool.ToArray();
        int length = cache.Length(sequence), ps = cache.PageSize, d = cache.HeadDim, hkv = cache.KvHeads;
        var table = cache.Allocator.BlockTable(sequence);
        var k = new T[length * hkv * d];
        var v = new T[length * hkv * d];
        for (int p = 0; p < length; p++)
        {
            for (int h = 0; h < hkv; h++)
            {
                long from = (((long)h * cache.PageCount + table[p / ps]) * ps + p % ps) * d;
                int to = (p * hkv + h) * d;
                Array.Copy(keys, from, k, to, d);
                Array.Copy(values, from, v, to, d);
            }
        }
        return (k, v);
    }

    /// <summary>GPU decode into NaN-filled destinations; returns output and LSE as floats.</summary>
    public static (float[] Output, float[] Lse) Decode<T>(CudaPagedKvCache<T> cache, int[] ids, T[] query, int q, int heads,
        AttentionOptions options, GpuDecodeOptions decodeOptions) where T : unmanaged
    {
        var context = cache.Context;
        int b = ids.Length, d = cache.HeadDim;
        using var qt = Upload(context, query, b, q, heads, d);
        using var o = Upload(context, Num.Filled<T>(b * q * heads * d, float.NaN), b, q, heads, d);
        using var lse = Upload(context, Num.Filled<float>(b * heads * q, float.NaN), b, heads, q);
        CudaDecode.Decode(qt, cache, ids, o, options, lse, decodeOptions);
        var output = new T[b * q * heads * d];
        o.CopyTo(output);
        var l = new float[b * heads * q];
        lse.CopyTo(l);
        return (Num.ToFloats<T>(output), l);
    }
}
