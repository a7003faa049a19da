// Decode over KV caches: bandwidth against a plain read of the same bytes, and the caching speedup.
using System.Numerics.Tensors;
using FastAttention.Cpu;
using FastAttention.Cpu.Caching;

namespace FastAttention.Bench;

/// <summary>One decode bandwidth row: the decode and a plain read of the same cache bytes, timed interleaved.</summary>
internal sealed record DecodeRow(string Cache, int Context, long Bytes, Measurement Decode, Measurement Read, string Dtype = "fp32")
{
    public double DecodeGBs => Bytes / (Decode.MedianMs * 1e-3) / 1e9;
    public double ReadGBs => Bytes / (Read.MedianMs * 1e-3) / 1e9;
    public double Fraction => Read.MedianMs / Decode.MedianMs;
}

/// <summary>One caching-speedup row: next-token output with a cache vs recomputing the whole prefix.</summary>
internal sealed record CachingRow(int Prefix, Measurement Cached, Measurement Recompute)
{
    public double Speedup => Recompute.MedianMs / Cached.MedianMs;
}

/// <summary>Decode benchmarks: B = 8, H = Hkv = 8, D = 128, fp32 (the setup of the libtorch SDPA figure).</summary>
internal static class DecodeSweeps
{
    public const int Batch = 8, Heads = 8, HeadDim = 128, PageSize = 16;

    public static int[] Contexts(RunScale scale) => scale switch
    {
        RunScale.Smoke => [64],
        RunScale.Quick => [1024, 4096, 16384],
        _ => [1024, 2048, 4096, 8192, 16384],
    };

    /// <summary>Floats read between timed runs to evict the last run's bytes from the caches (256 MiB, above any L3 here).</summary>
    private const int EvictFloats = 64 << 20;

    /// <summary>
    /// Times decode of one new token per sequence against every context, over a contiguous and a paged
    /// cache; each decode run is followed by a parallel plain read (sum) of the same K/V bytes, so both
    /// see the same memory conditions and the ratio is fair on a shared machine. Before each timed run an
    /// unrelated buffer larger than the L3 is read, so both start from memory: otherwise the smaller
    /// contexts partly fit the L3 and each run inherits, in its own access order, what the other left there
    /// (the plain read of context 1024 then exceeded the measured DRAM bandwidth). A model's decode step
    /// meets a layer's cache cold too: the other layers' caches were read in between.
    /// </summary>
    public static List<DecodeRow> RunBandwidth(RunScale scale, int threads, RunPolicy policy, Action<string> log)
    {
        var rows = new List<DecodeRow>();
        float[] evict = scale == RunScale.Smoke ? new float[1 << 16] : CachePool.Allocate<float>(EvictFloats);
        evict.AsSpan().Fill(1f / 1024);
        rows.AddRange(RunBandwidth<float>(scale, threads, policy, log, evict, "fp32", x => x));
        // fp16 and bf16 caches (full runs): half the bytes per token; the rows show whether decode keeps up with them.
        if (scale == RunScale.Full)
        {
            rows.AddRange(RunBandwidth<Half>(scale, threads, policy, log, evict, "fp16", x => (Half)x));
            rows.AddRange(RunBandwidth<BFloat16>(scale, threads, policy, log, evict, "bf16", x => (BFloat16)x));
        }
        return rows;
    }

    private static List<DecodeRow> RunBandwidth<T>(RunScale scale, int threads, RunPolicy policy, Action<string> log, float[] evict,
        string dtype, Func<float, T> from) where T : unmanaged
    {
        var rows = new List<DecodeRow>();
        var random = new Random(7);
        foreach (int context in Contexts(scale))
        {
            var tokens = new T[context * Heads * HeadDim];
            for (int i = 0; i < tokens.Length; i++) tokens[i] = from((float)(random.NextDouble() * 2 - 1));
            var block = new ReadOnlyTensorSpan<T>(tokens, [context, Heads, HeadDim], default);
            var query = new T[Batch * Heads * HeadDim];
            for (int i = 0; i < query.Length; i++) query[i] = from((float)(random.NextDouble() * 2 - 1));
            var output = new T[query.Length];
            var options = new AttentionOptions { MaxDegreeOfParallelism = threads };
            long bytes = 2L * Batch * context * Heads * HeadDim * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();

            {
                log($"decode contiguous {dtype}, context {context}");
                var cache = new KvCache<T>(Batch, context, Heads, HeadDim);
                for (int b = 0; b < Batch; b++) cache.Append(b, block, block);
                rows.Add(Measure("contiguous", dtype, context, bytes, policy, threads, evict,
                    () => CpuAttention.Decode<T>(new ReadOnlyTensorSpan<T>(query, [Batch, 1, Heads, HeadDim], default), cache,
                        new TensorSpan<T>(output, [Batch, 1, Heads, HeadDim], default), options),
                    (c, chunks) => SumChunk(AsFloats<T>(cache.KeyStorage), AsFloats<T>(cache.ValueStorage), c, chunks)));
            }
            GC.Collect();
            {
                log($"decode paged ({PageSize}-token pages) {dtype}, context {context}");
                var cache = new PagedKvCache<T>(Batch * context / PageSize, PageSize, Heads, HeadDim);
                var ids = new int[Batch];
                for (int b = 0; b < Batch; b++)
                {
                    ids[b] = cache.CreateSequence();
                    cache.Append(ids[b], block, block);
                }
                rows.Add(Measure($"paged ({PageSize})", dtype, context, bytes, policy, threads, evict,
                    () => CpuAttention.Decode<T>(new ReadOnlyTensorSpan<T>(query, [Batch, 1, Heads, HeadDim], default), cache, ids,
                        new TensorSpan<T>(output, [Batch, 1, Heads, HeadDim], default), options),
                    (c, chunks) => SumChunk(AsFloats<T>(cache.KeyStorage), AsFloats<T>(cache.ValueStorage), c, chunks)));
            }
            GC.Collect();
        }
        return rows;
    }

    /// <summary>The pool's bytes as floats, for the plain read (the sum's value does not matter, only that every byte is read).</summary>
    private static ReadOnlySpan<float> AsFloats<T>(Span<T> pool) where T : unmanaged =>
        System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(pool);

    /// <summary>
    /// Sum of chunk <paramref name="c"/> of <paramref name="chunks"/>: the first half of the chunks cover the keys, the
    /// second the values. The pools here hold exactly the timed context (B·ctx·H·D elements; as floats a multiple of chunks / 2),
    /// so the chunks cover every byte counted in the row's bandwidth.
    /// </summary>
    private static float SumChunk(ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int c, int chunks)
    {
        ReadOnlySpan<float> source = c < chunks / 2 ? keys : values;
        int length = source.Length / (chunks / 2), start = c % (chunks / 2) * length;
        return Peak.Sum(source.Slice(start, length));
    }

    /// <summary>
    /// Times <paramref name="decode"/> against a plain parallel read (sum) of the cache's own K/V pools,
    /// so both read the same pages (the pools are huge-page backed where the OS allows, a copy would not be),
    /// each after a read of <paramref name="evict"/> that is not timed. Rows of other types than fp32 name it after the cache.
    /// </summary>
    private static DecodeRow Measure(string cache, string dtype, int context, long bytes, RunPolicy policy, int threads, float[] evict,
        Action decode, Func<int, int, float> sumChunk)
    {
        const int chunks = 32;
        var sink = new float[2 * chunks];
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = threads };
        void Read() => Parallel.For(0, chunks, parallel, c => sink[c] = sumChunk(c, chunks));
        void Evict() => Parallel.For(0, chunks, parallel, c =>
        {
            int length = evict.Length / chunks;
            sink[chunks + c] = Peak.Sum(evict.AsSpan(c * length, length));
        });
        for (int i = 0; i < policy.WarmUps; i++) { decode(); Read(); }
        var decodeMs = new List<double>();
        var readMs = new List<double>();
        double total = 0;
        while (decodeMs.Count < policy.MaxRuns && (decodeMs.Count < policy.MinRuns || total < policy.MinSeconds))
        {
            Evict();
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            decode();
            double d = System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            Evict();
            t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            Read();
            double r = System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            decodeMs.Add(d);
            readMs.Add(r);
            total += (d + r) / 1e3;
        }
        return new DecodeRow(dtype == "fp32" ? cache : $"{cache}, {dtype}", context, bytes, Runner.Summarise(decodeMs), Runner.Summarise(readMs), dtype);
    }

    public static int[] Prefixes(RunScale scale) => scale switch
    {
        RunScale.Smoke => [16],
        RunScale.Quick => [128, 512, 2048],
        _ => [128, 256, 512, 1024, 2048, 4096],
    };

    /// <summary>
    /// A causal multi-head attention layer (d_model 1024, 16 heads of 64) producing the next token's
    /// output: through a KV cache holding the prefix, against recomputing the layer over the whole prefix.
    /// </summary>
    public static List<CachingRow> RunCaching(RunScale scale, int threads, RunPolicy policy, Action<string> log)
    {
        const int model = 1024, heads = 16;
        var mha = new MultiHeadAttention(new AttentionConfig(model, heads, causal: true), maxDegreeOfParallelism: threads);
        mha.InitializeRandom(11);
        var rows = new List<CachingRow>();
        var random = new Random(5);
        foreach (int prefix in Prefixes(scale))
        {
            log($"caching speedup, prefix {prefix}");
            var x = new float[(prefix + 1) * model];
            for (int i = 0; i < x.Length; i++) x[i] = (float)(random.NextDouble() * 2 - 1);
            var cache = new KvCache<float>(1, prefix + 1, heads, model / heads);
            var prefixOut = new float[prefix * model];
            mha.Forward(new ReadOnlyTensorSpan<float>(x, [1, prefix, model], default), new TensorSpan<float>(prefixOut, [1, prefix, model], default), cache);
            var next = new float[model];
            var nextOut = new float[model];
            x.AsSpan(prefix * model, model).CopyTo(next);
            var cached = Runner.Measure(() =>
            {
                mha.Forward(new ReadOnlyTensorSpan<float>(next, [1, 1, model], default), new TensorSpan<float>(nextOut, [1, 1, model], default), cache);
                cache.Trim(0, prefix);
            }, policy);
            var fullOut = new float[(prefix + 1) * model];
            var recompute = Runner.Measure(() =>
                mha.Forward(new ReadOnlyTensorSpan<float>(x, [1, prefix + 1, model], default), new TensorSpan<float>(fullOut, [1, prefix + 1, model], default)),
                policy);
            rows.Add(new CachingRow(prefix, cached, recompute));
        }
        return rows;
    }
}
