// CpuAttention.Decode over KvCache and PagedKvCache vs the double reference, with every slot no live
// sequence uses filled with NaN (so a read past a length or into a foreign page shows up as NaN).
//
// A covering set, not a cartesian product: every head dim (32/64/80/128/256), GQA ratio (1/4/8, MQA),
// query count (1/2/5/16), page size (8/16/64/256) and element type appears, with lengths 0, 1, 2, page
// multiples and odd sizes up to ~5000, causal on/off, sliding windows (both sides, one side, (0,0)),
// q > length, a 130-row prefill chunk, zero, custom and negative scales and 1..16 workers (so 1..20 key splits).

using FastAttention.Cpu.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Caching;

/// <summary>One decode parity case: per-sequence cache lengths, H/Hkv/D, q query rows, mask, page size.</summary>
public sealed record DecodeCase(string DType, int[] Lengths, int H, int Hkv, int D, int Q, bool Causal, int WinLeft, int WinRight, int PageSize,
    int Parallelism = -1, float? Scale = null, double Sigma = 1.0)
{
    public AttentionOptions Options => new()
    {
        Mask = new AttentionMask { Causal = Causal, WindowLeft = WinLeft, WindowRight = WinRight },
        Scale = Scale,
        MaxDegreeOfParallelism = Parallelism,
    };

    public override string ToString() =>
        $"{DType} L[{string.Join(",", Lengths)}] H{H}/{Hkv} D{D} q{Q}{(Causal ? " causal" : "")}" +
        $"{(WinLeft >= 0 || WinRight >= 0 ? $" win({WinLeft},{WinRight})" : "")} page{PageSize}" +
        $"{(Parallelism > 0 ? $" par{Parallelism}" : "")}{(Scale is { } s ? $" scale={s}" : "")}{(Sigma != 1 ? $" sigma={Sigma}" : "")}";
}

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class DecodeParityTests
{
    private static readonly DecodeCase[] Cases =
    [
        new("f32", [0, 1, 37, 300], 8, 8, 64, 1, false, -1, -1, 16),
        new("f32", [5000, 1023, 17], 8, 2, 128, 1, false, -1, -1, 256, Parallelism: 16),
        new("f32", [1025, 339], 8, 1, 80, 5, true, -1, -1, 8),
        new("f32", [203, 0, 64, 2], 16, 2, 32, 16, true, -1, -1, 64),
        new("f32", [113, 2049], 4, 4, 256, 2, true, 100, 0, 16, Parallelism: 1),
        new("f32", [1000, 3, 257], 8, 2, 64, 5, false, 31, 5, 8),
        new("f32", [2, 700], 4, 1, 128, 16, true, 0, 0, 64),
        new("f32", [3, 1, 0], 4, 2, 32, 5, true, -1, -1, 8),
        new("f32", [5, 2], 4, 4, 64, 5, false, 0, 0, 8),
        new("f32", [4097], 16, 2, 64, 16, false, -1, -1, 256, Parallelism: 16),
        new("f32", [511, 512, 513], 4, 4, 64, 2, false, -1, -1, 256, Scale: -0.3f),
        new("f32", [640, 77], 2, 2, 64, 1, false, 200, -1, 16, Scale: 0.9f, Sigma: 3),
        new("f32", [64, 16, 8], 8, 1, 32, 1, true, -1, 3, 8, Parallelism: 3),
        new("f32", [1000, 130, 129], 8, 2, 64, 130, true, -1, -1, 16),           // a prefill chunk: q > block, q >= length
        new("bf16", [77, 300], 4, 2, 64, 2, true, -1, -1, 16, Scale: 0f),
        new("f16", [2000, 77], 8, 2, 128, 1, false, -1, -1, 16),
        new("f16", [513, 5], 4, 1, 80, 5, true, 64, -1, 64),
        new("f16", [1500], 4, 4, 256, 2, true, -1, -1, 256, Parallelism: 8),
        new("f16", [33, 0, 300], 8, 8, 32, 16, false, -1, -1, 8),
        new("bf16", [4999, 0, 31], 8, 8, 64, 1, false, -1, -1, 8),
        new("bf16", [640], 16, 2, 32, 16, true, -1, -1, 16),
        new("bf16", [3000, 129], 8, 1, 128, 2, false, 200, 10, 64),
        new("bf16", [257, 1000], 4, 4, 256, 5, true, 50, 0, 256, Parallelism: 16),
        // One query column (H = Hkv, q = 1): the 16-keys-at-a-time scoring with its remainder, and D not a multiple of 16.
        new("f32", [1500, 17, 16, 33], 4, 4, 128, 1, false, 100, -1, 16),
        new("f32", [2049, 15], 2, 2, 256, 1, true, -1, -1, 64),
        new("f32", [300, 1000, 31], 2, 2, 80, 1, false, -1, -1, 8),
        new("f32", [300, 47], 2, 2, 40, 1, false, -1, -1, 8),
        // The same with fp16 / bf16 caches: rows converted in registers by the one-column kernels (D a multiple of 16).
        new("f16", [1500, 17, 16, 33], 4, 4, 128, 1, false, 100, -1, 16),
        new("f16", [2049, 15], 2, 2, 256, 1, true, -1, -1, 64),
        new("f16", [300, 1000, 31], 2, 2, 80, 1, false, -1, -1, 8),
        new("f16", [300, 47], 2, 2, 40, 1, false, -1, -1, 8),
        new("bf16", [1500, 17, 16, 33], 4, 4, 128, 1, true, -1, -1, 16),
        new("bf16", [300, 1000, 31], 2, 2, 80, 1, false, 64, -1, 8),
    ];

    private static IEnumerable<TestCaseData> Source() =>
        Cases.Select((c, i) => new TestCaseData(c, i).SetName($"Decode({c})"));

    [TestCaseSource(nameof(Source))]
    public void MatchesReference(DecodeCase c, int index)
    {
        switch (c.DType)
        {
            case "f32": Run<float>(c, index); break;
            case "f16": Run<Half>(c, index); break;
            case "bf16": Run<BFloat16>(c, index); break;
            default: Assert.Fail($"unknown dtype {c.DType}"); break;
        }
    }

    /// <summary>Every other case with the 256- and 128-bit kernels forced.</summary>
    private static IEnumerable<TestCaseData> NarrowWidthSource()
    {
        for (int i = 0; i < Cases.Length; i += 2)
        {
            foreach (int bits in new[] { 256, 128 })
            {
                yield return new TestCaseData(Cases[i], i, bits).SetName($"DecodeAt{bits}Bits({Cases[i]})");
            }
        }
    }

    [TestCaseSource(nameof(NarrowWidthSource))]
    public void MatchesReferenceAtNarrowerVectorWidths(DecodeCase c, int index, int bits)
    {
        var width = bits == 256 ? VectorWidth.V256 : VectorWidth.V128;
        switch (c.DType)
        {
            case "f32": Run<float>(c, index, width); break;
            case "f16": Run<Half>(c, index, width); break;
            case "bf16": Run<BFloat16>(c, index, width); break;
            default: Assert.Fail($"unknown dtype {c.DType}"); break;
        }
    }

    private static void Run<T>(DecodeCase c, int index, VectorWidth width = VectorWidth.Auto) where T : unmanaged
    {
        var rng = new Rng(5000 + (ulong)index);
        int batch = c.Lengths.Length;
        var histories = c.Lengths.Select(length =>
        {
            var h = new TokenHistory<T>(c.Hkv, c.D);
            h.Add(rng.Normal<T>(length * c.Hkv * c.D, c.Sigma), rng.Normal<T>(length * c.Hkv * c.D));
            return h;
        }).ToArray();

        var contiguous = BuildContiguous(histories, rng);
        var (paged, ids) = BuildPaged(histories, c.PageSize, rng);
        CacheTestSupport.PoisonUnused(contiguous);
        CacheTestSupport.PoisonUnused(paged);

        var query = rng.Normal<T>(batch * c.Q * c.H * c.D);
        var options = c.Options with { Width = width };
        var (o1, l1) = CacheTestSupport.Decode(contiguous, query, c.Q, c.H, options);
        var (o2, l2) = CacheTestSupport.Decode(paged, ids, query, c.Q, c.H, options);
        CacheTestSupport.AssertMatchesReference([($"KvCache {c}", o1, l1), ($"PagedKvCache {c}", o2, l2)], query, histories, c.Q, c.H, options);
        // Keys are visited in the same position order in 64-key blocks either way, so the results agree bit for bit.
        Tolerance.AssertBitwiseEqual(o2, o1, "paged vs contiguous output", [batch, c.Q, c.H, c.D]);
        AssertSameLse(l2, l1, [batch, c.H, c.Q]);
    }

    /// <summary>LSE equality that lets -inf equal -inf.</summary>
    private static void AssertSameLse(float[] actual, float[] expected, int[] dims)
    {
        for (int i = 0; i < actual.Length; i++)
        {
            if (!actual[i].Equals(expected[i])) Assert.Fail($"paged vs contiguous LSE at {Tolerance.FormatIndex(i, dims)}: {actual[i]} vs {expected[i]}");
        }
    }

    /// <summary>
    /// A contiguous cache with a few slots of spare capacity, NaN everywhere first: one batched append of
    /// the common prefix (head-major input), then ragged per-sequence chunks from rotating layouts.
    /// </summary>
    internal static KvCache<T> BuildContiguous<T>(TokenHistory<T>[] histories, Rng rng) where T : unmanaged
    {
        int batch = histories.Length, hkv = histories[0].KvHeads, d = histories[0].HeadDim;
        int max = histories.Max(h => h.Length);
        var cache = new KvCache<T>(batch, max + 7, hkv, d);
        cache.KeyStorage.Fill(Num.FromFloat<T>(float.NaN));
        cache.ValueStorage.Fill(Num.FromFloat<T>(float.NaN));
        int common = histories.Min(h => h.Length);
        int first = common / 2;
        foreach (var (start, n) in new[] { (0, first), (first, common - first) })
        {
            int[] lengths = [batch, n, hkv, d];
            var k = histories.SelectMany(h => h.Slice(true, start, n)).ToArray();
            var v = histories.SelectMany(h => h.Slice(false, start, n)).ToArray();
            cache.Append(CacheTestSupport.TokensView(k, lengths, 1, out _), CacheTestSupport.TokensView(v, lengths, 2, out _));
        }
        for (int b = 0; b < batch; b++)
        {
            int done = common, length = histories[b].Length, layout = b;
            while (done < length)
            {
                int n = Math.Min(length - done, rng.Next(1, Math.Max(40, length / 10)));
                int[] lengths = [n, hkv, d];
                cache.Append(b, CacheTestSupport.TokensView(histories[b].Slice(true, done, n), lengths, layout % 4, out _),
                    CacheTestSupport.TokensView(histories[b].Slice(false, done, n), lengths, (layout + 3) % 4, out _));
                done += n;
                layout++;
            }
        }
        Assert.That(cache.Lengths.ToArray(), Is.EqualTo(histories.Select(h => h.Length).ToArray()), "contiguous cache lengths");
        return cache;
    }

    /// <summary>
    /// A paged cache holding the histories in scrambled, non-contiguous pages: the sequences are appended
    /// in random interleaved chunks while short-lived filler sequences take and return pages.
    /// Returns the cache and the sequence id of each batch entry.
    /// </summary>
    internal static (PagedKvCache<T> Cache, int[] Ids) BuildPaged<T>(TokenHistory<T>[] histories, int pageSize, Rng rng) where T : unmanaged
    {
        int batch = histories.Length, hkv = histories[0].KvHeads, d = histories[0].HeadDim;
        int pages = histories.Sum(h => (h.Length + pageSize - 1) / pageSize) + 3 * 2 + 2;
        var cache = new PagedKvCache<T>(pages, pageSize, hkv, d);
        T nan = Num.FromFloat<T>(float.NaN);
        cache.KeyStorage.Fill(nan);
        cache.ValueStorage.Fill(nan);
        var fillers = new List<int> { cache.CreateSequence(), cache.CreateSequence() };
        foreach (int f in fillers) AppendJunk(cache, f, rng.Next(1, 2 * pageSize), rng);
        var ids = histories.Select(_ => cache.CreateSequence()).ToArray();
        var done = new int[batch];
        int step = 0;
        while (Enumerable.Range(0, batch).Any(b => done[b] < histories[b].Length))
        {
            int r = rng.Next(0, batch);
            if (r == batch)
            {
                if (fillers.Count < 3 && rng.NextBool(0.5))
                {
                    int f = cache.CreateSequence();
                    fillers.Add(f);
                    AppendJunk(cache, f, rng.Next(1, 2 * pageSize), rng);
                }
                else if (fillers.Count > 0)
                {
                    int i = rng.Next(0, fillers.Count - 1);
                    cache.Free(fillers[i]);
                    fillers.RemoveAt(i);
                }
                continue;
            }
            int length = histories[r].Length;
            if (done[r] == length) continue;
            int n = Math.Min(length - done[r], rng.Next(1, Math.Max(2 * pageSize, length / 12)));
            int[] lengths = [n, hkv, d];
            cache.Append(ids[r], CacheTestSupport.TokensView(histories[r].Slice(true, done[r], n), lengths, step % 4, out _),
                CacheTestSupport.TokensView(histories[r].Slice(false, done[r], n), lengths, (step + 1) % 4, out _));
            done[r] += n;
            step++;
        }
        foreach (int f in fillers) cache.Free(f);
        int total = ids.Sum(id => cache.Allocator.BlockTable(id).Length);
        if (total >= 4)
        {
            bool scattered = ids.Any(id =>
            {
                var t = cache.Allocator.BlockTable(id).ToArray();
                return t.Zip(t.Skip(1)).Any(p => p.Second != p.First + 1);
            });
            Assert.That(scattered, Is.True, "the test meant to produce non-contiguous block tables");
        }
        return (cache, ids);
    }

    private static void AppendJunk<T>(PagedKvCache<T> cache, int seq, int n, Rng rng) where T : unmanaged
    {
        int size = n * cache.KvHeads * cache.HeadDim;
        var k = rng.Normal<T>(size, 50);
        cache.Append(seq, Views.Strided(k, [n, cache.KvHeads, cache.HeadDim], [cache.KvHeads * cache.HeadDim, cache.HeadDim, 1]),
            Views.Strided(k, [n, cache.KvHeads, cache.HeadDim], [cache.KvHeads * cache.HeadDim, cache.HeadDim, 1]));
    }
}
