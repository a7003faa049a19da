// Decode behaviour beyond the parity sweep: a randomized create/append/fork/free/trim run on the paged
// cache decoded against each sequence's own token history, rows that see nothing, LSE in closed form,
// strided query/output/LSE views, duplicate sequence ids, Forward over the contiguous cache's views,
// and decode leaving the caches untouched.

using FastAttention.Cpu.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Caching;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class DecodeTests
{
    /// <summary>
    /// Seeded random interleavings of create / append (0..40 tokens, including ones the pool cannot hold) /
    /// fork / free / trim over up to 10 sequences. The test keeps each sequence's token history (a fork
    /// copies it). Every few operations every slot no live table references is filled with NaN and all live
    /// sequences, in shuffled order, are decoded with a random mask and compared with the reference built
    /// from their histories.
    /// </summary>
    [TestCase("f32", 1UL, 8, 40)]
    [TestCase("f32", 2UL, 16, 64)]
    [TestCase("f32", 3UL, 5, 32)]
    [TestCase("bf16", 4UL, 8, 48)]
    [TestCase("f16", 5UL, 64, 32)]
    public void RandomPagedOperationsDecodeLikeTheirHistories(string dtype, ulong seed, int pageSize, int headDim)
    {
        switch (dtype)
        {
            case "f32": RandomPaged<float>(seed, pageSize, headDim); break;
            case "f16": RandomPaged<Half>(seed, pageSize, headDim); break;
            default: RandomPaged<BFloat16>(seed, pageSize, headDim); break;
        }
    }

    private static void RandomPaged<T>(ulong seed, int pageSize, int d) where T : unmanaged
    {
        const int heads = 4, hkv = 2, maxLive = 10, ops = 300;
        var rng = new Rng(seed);
        var cache = new PagedKvCache<T>(Math.Max(12, 400 / pageSize), pageSize, hkv, d);
        var live = new Dictionary<int, TokenHistory<T>>();
        var counts = new Dictionary<string, int>();
        int decodes = 0;
        for (int op = 0; op < ops; op++)
        {
            var ids = live.Keys.Order().ToArray();
            int choice = rng.Next(0, 99);
            string kind;
            if (ids.Length == 0 || (choice < 12 && ids.Length < maxLive))
            {
                kind = "create";
                live[cache.CreateSequence()] = new TokenHistory<T>(hkv, d);
            }
            else if (choice < 62)
            {
                int s = ids[rng.Next(0, ids.Length - 1)];
                int n = rng.NextBool(0.1) ? 0 : rng.Next(1, 40);
                var k = rng.Normal<T>(n * hkv * d);
                var v = rng.Normal<T>(n * hkv * d);
                int[] lengths = [n, hkv, d];
                if (cache.Allocator.PagesNeeded(s, n) > cache.Allocator.FreePages)
                {
                    kind = "exhausted";
                    var before = (cache.KeyStorage.ToArray(), cache.ValueStorage.ToArray(), CacheTestSupport.Snapshot(cache.Allocator));
                    Assert.Throws<ArgumentOutOfRangeException>(() => cache.Append(s,
                        CacheTestSupport.TokensView(k, lengths, op % 4, out _), CacheTestSupport.TokensView(v, lengths, op % 4, out _)));
                    Assert.That(CacheTestSupport.Snapshot(cache.Allocator), Is.EqualTo(before.Item3), $"op {op}: allocator after a failed append");
                    CacheTestSupport.AssertSameBits<T>(cache.KeyStorage, before.Item1, $"op {op}: key pool after a failed append");
                    CacheTestSupport.AssertSameBits<T>(cache.ValueStorage, before.Item2, $"op {op}: value pool after a failed append");
                }
                else
                {
                    kind = "append";
                    cache.Append(s, CacheTestSupport.TokensView(k, lengths, op % 4, out _), CacheTestSupport.TokensView(v, lengths, (op + 1) % 4, out _));
                    live[s].Add(k, v);
                }
            }
            else if (choice < 77)
            {
                kind = "fork";
                if (ids.Length >= maxLive) continue;
                int s = ids[rng.Next(0, ids.Length - 1)];
                live[cache.Fork(s)] = live[s].Clone();
            }
            else if (choice < 92)
            {
                kind = "free";
                int s = ids[rng.Next(0, ids.Length - 1)];
                cache.Free(s);
                live.Remove(s);
            }
            else
            {
                kind = "trim";
                int s = ids[rng.Next(0, ids.Length - 1)];
                int length = rng.Next(0, live[s].Length);
                cache.Allocator.Trim(s, length);
                live[s].Trim(length);
            }
            counts[kind] = counts.GetValueOrDefault(kind) + 1;

            if (op % 4 == 3 && live.Count > 0)
            {
                CacheTestSupport.PoisonUnused(cache);
                var order = live.Keys.OrderBy(_ => rng.NextULong()).ToArray();
                int q = rng.Next(1, 3);
                var mask = rng.Next(0, 3) switch
                {
                    0 => AttentionMask.None,
                    1 => AttentionMask.CausalMask,
                    2 => AttentionMask.SlidingWindow(rng.Next(0, 50), 0, causal: true),
                    _ => AttentionMask.SlidingWindow(rng.Next(0, 30), rng.Next(0, 3)),
                };
                var options = new AttentionOptions { Mask = mask };
                var query = rng.Normal<T>(order.Length * q * heads * d);
                var (o, lse) = CacheTestSupport.Decode(cache, order, query, q, heads, options);
                CacheTestSupport.AssertMatchesReference(o, lse, query, order.Select(id => live[id]).ToArray(), q, heads, options,
                    $"op {op} decode of [{string.Join(",", order)}] q{q} {mask}");
                decodes++;
            }
        }
        Assert.That(decodes, Is.GreaterThan(ops / 8));
        foreach (string k in new[] { "create", "append", "exhausted", "fork", "free", "trim" })
        {
            Assert.That(counts.GetValueOrDefault(k), Is.GreaterThan(0), $"operation '{k}' never happened: {string.Join(", ", counts)}");
        }
    }

    /// <summary>Length-0 sequences, queries placed before the first key (q &gt; length, causal) and windows that miss every key: zeros and -inf, never NaN.</summary>
    [TestCase(true, -1, -1)]
    [TestCase(false, 0, 0)]
    [TestCase(true, 2, 0)]
    public void RowsThatSeeNothingGiveZerosAndNegativeInfinity(bool causal, int left, int right)
    {
        const int heads = 4, hkv = 2, d = 32, q = 6;
        int[] lengths = [0, 2, 4, 9];
        var rng = new Rng(60);
        var histories = lengths.Select(n =>
        {
            var h = new TokenHistory<float>(hkv, d);
            h.Add(rng.Normal<float>(n * hkv * d), rng.Normal<float>(n * hkv * d));
            return h;
        }).ToArray();
        var contiguous = DecodeParityTests.BuildContiguous(histories, rng);
        var (paged, ids) = DecodeParityTests.BuildPaged(histories, 4, rng);
        CacheTestSupport.PoisonUnused(contiguous);
        CacheTestSupport.PoisonUnused(paged);
        var options = new AttentionOptions { Mask = new AttentionMask { Causal = causal, WindowLeft = left, WindowRight = right } };
        var query = rng.Normal<float>(lengths.Length * q * heads * d);
        foreach (var (name, (o, lse)) in new[]
        {
            ("KvCache", CacheTestSupport.Decode(contiguous, query, q, heads, options)),
            ("PagedKvCache", CacheTestSupport.Decode(paged, ids, query, q, heads, options)),
        })
        {
            int blind = 0;
            for (int b = 0; b < lengths.Length; b++)
                for (int i = 0; i < q; i++)
                {
                    int diagonal = lengths[b] - q + i;
                    int lo = left < 0 ? 0 : Math.Max(0, diagonal - left);
                    int hi = Math.Min(lengths[b] - 1, causal ? diagonal : right < 0 ? int.MaxValue : diagonal + right);
                    bool seesNothing = lo > hi;
                    for (int h = 0; h < heads; h++)
                    {
                        float l = lse[(b * heads + h) * q + i];
                        var row = o.AsSpan(((b * q + i) * heads + h) * d, d);
                        if (seesNothing)
                        {
                            Assert.That(l, Is.EqualTo(float.NegativeInfinity), $"{name}: LSE of [{b},{h},{i}] (length {lengths[b]})");
                            Assert.That(row.ToArray(), Is.All.EqualTo(0f), $"{name}: output of [{b},{i},{h}] (length {lengths[b]})");
                            blind++;
                        }
                        else
                        {
                            Assert.That(float.IsFinite(l), Is.True, $"{name}: LSE of [{b},{h},{i}] = {l}");
                        }
                    }
                }
            Assert.That(blind, Is.GreaterThan(0), "the case must contain rows that see nothing");
            CacheTestSupport.AssertMatchesReference(o, lse, query, histories, q, heads, options, name);
        }
    }

    /// <summary>One key: output = its value row, LSE = scale · q·k exactly (up to rounding).</summary>
    [Test]
    public void SingleKeyGivesItsValueAndTheScaledScoreAsLse()
    {
        const int heads = 2, d = 16;
        var cache = new KvCache<float>(1, 4, 1, d);
        var k = Enumerable.Range(0, d).Select(x => (x % 5 - 2) * 0.25f).ToArray();
        var v = Enumerable.Range(0, d).Select(x => x * 0.5f - 3).ToArray();
        cache.Append(0, Views.Strided(k, [1, 1, d], [d, d, 1]), Views.Strided(v, [1, 1, d], [d, d, 1]));
        CacheTestSupport.PoisonUnused(cache);
        var query = Enumerable.Range(0, heads * d).Select(x => (x % 7 - 3) * 0.5f).ToArray();
        var options = new AttentionOptions { Scale = 0.75f };
        var (o, lse) = CacheTestSupport.Decode(cache, query, 1, heads, options);
        for (int h = 0; h < heads; h++)
        {
            double dot = 0;
            for (int x = 0; x < d; x++) dot += query[h * d + x] * k[x];
            Assert.That(lse[h], Is.EqualTo(0.75 * dot).Within(1e-5), $"LSE of head {h}");
            Assert.That(o.AsSpan(h * d, d).ToArray(), Is.EqualTo(v).Within(1e-6), $"output of head {h}");
        }
    }

    /// <summary>Query, output and LSE through non-contiguous views give the same results as contiguous ones.</summary>
    [Test]
    public void StridedQueryOutputAndLseMatchContiguous()
    {
        const int heads = 8, hkv = 2, d = 64, q = 3;
        var rng = new Rng(61);
        int[] lengths = [300, 17, 1];
        var histories = lengths.Select(n =>
        {
            var h = new TokenHistory<Half>(hkv, d);
            h.Add(rng.Normal<Half>(n * hkv * d), rng.Normal<Half>(n * hkv * d));
            return h;
        }).ToArray();
        var (paged, ids) = DecodeParityTests.BuildPaged(histories, 16, rng);
        var contiguous = DecodeParityTests.BuildContiguous(histories, rng);
        var query = rng.Normal<Half>(lengths.Length * q * heads * d);
        var options = new AttentionOptions { Mask = AttentionMask.CausalMask };
        var (expectedOut, expectedLse) = CacheTestSupport.Decode(paged, ids, query, q, heads, options);
        int b = lengths.Length;

        // Query as BHSD memory; output BHSD with padding and D stride 2; LSE as [B, q, H] memory.
        var qView = CacheTestSupport.TokensView(query, [b, q, heads, d], 1, out _);
        var o = new Half[b * heads * q * (2 * d + 1)];
        Array.Fill(o, (Half)float.NaN);
        var oView = Views.Strided(o, [b, q, heads, d], [heads * q * (2 * d + 1), 2 * d + 1, q * (2 * d + 1), 2]);
        var lse = Num.Filled<float>(b * q * heads, float.NaN);
        var lseView = Views.Strided(lse, [b, heads, q], [q * heads, 1, heads]);
        foreach (bool usePaged in new[] { true, false })
        {
            Array.Fill(o, (Half)float.NaN);
            Array.Fill(lse, float.NaN);
            if (usePaged) CpuAttention.Decode<Half>(qView, paged, ids, oView, options, lseView);
            else CpuAttention.Decode<Half>(qView, contiguous, oView, options, lseView);
            var gotOut = new float[expectedOut.Length];
            var gotLse = new float[expectedLse.Length];
            for (int bb = 0; bb < b; bb++)
                for (int i = 0; i < q; i++)
                    for (int h = 0; h < heads; h++)
                    {
                        for (int x = 0; x < d; x++) gotOut[((bb * q + i) * heads + h) * d + x] = (float)oView[[bb, i, h, x]];
                        gotLse[(bb * heads + h) * q + i] = lseView[[bb, h, i]];
                    }
            string cacheName = usePaged ? "paged" : "contiguous";
            Tolerance.AssertBitwiseEqual(gotOut, expectedOut, $"{cacheName}: strided output", [b, q, heads, d]);
            Tolerance.AssertBitwiseEqual(gotLse, expectedLse, $"{cacheName}: strided LSE", [b, heads, q]);
        }
    }

    /// <summary>The same sequence id twice in one paged decode gives the same result twice; omitting LSE changes nothing.</summary>
    [Test]
    public void DuplicateSequenceIdsAndOmittedLse()
    {
        const int heads = 4, hkv = 1, d = 32, q = 2;
        var rng = new Rng(62);
        var h = new TokenHistory<float>(hkv, d);
        h.Add(rng.Normal<float>(150 * hkv * d), rng.Normal<float>(150 * hkv * d));
        var (paged, ids) = DecodeParityTests.BuildPaged([h], 8, rng);
        CacheTestSupport.PoisonUnused(paged);
        var one = rng.Normal<float>(q * heads * d);
        int[] twice = [ids[0], ids[0]];
        var query = one.Concat(one).ToArray();
        var (o, lse) = CacheTestSupport.Decode(paged, twice, query, q, heads, AttentionOptions.Default);
        Tolerance.AssertBitwiseEqual(o[(q * heads * d)..], o[..(q * heads * d)], "second copy vs first", [q, heads, d]);
        CacheTestSupport.AssertMatchesReference(o, lse, query, [h, h], q, heads, AttentionOptions.Default, "duplicate ids");

        var noLse = new float[o.Length];
        CpuAttention.Decode<float>(Views.Bshd(query, 2, q, heads, d), paged, twice, Views.Bshd(noLse, 2, q, heads, d));
        Tolerance.AssertBitwiseEqual(noLse, o, "without LSE", [2, q, heads, d]);
    }

    /// <summary>
    /// KvCache.Keys/Values with KeyLengths = Lengths feed Forward directly (as documented), and give what
    /// decode gives, with NaN in every slot past each length.
    /// </summary>
    [TestCase(false)]
    [TestCase(true)]
    public void ForwardOverTheCacheViewsEqualsDecode(bool causal)
    {
        const int heads = 8, hkv = 2, d = 64, q = 4;
        var rng = new Rng(63);
        int[] lengths = [200, 5, 0, 77];
        var histories = lengths.Select(n =>
        {
            var h = new TokenHistory<float>(hkv, d);
            h.Add(rng.Normal<float>(n * hkv * d), rng.Normal<float>(n * hkv * d));
            return h;
        }).ToArray();
        var cache = DecodeParityTests.BuildContiguous(histories, rng);
        CacheTestSupport.PoisonUnused(cache);
        var query = rng.Normal<float>(lengths.Length * q * heads * d);
        var options = new AttentionOptions { Mask = new AttentionMask { Causal = causal } };
        var (decoded, decodedLse) = CacheTestSupport.Decode(cache, query, q, heads, options);
        var forward = Num.Filled<float>(decoded.Length, float.NaN);
        var forwardLse = Num.Filled<float>(decodedLse.Length, float.NaN);
        var forwardOptions = options with { Mask = options.Mask with { KeyLengths = cache.Lengths.ToArray() } };
        CpuAttention.Forward<float>(Views.Bshd(query, lengths.Length, q, heads, d), cache.Keys, cache.Values,
            Views.Bshd(forward, lengths.Length, q, heads, d), forwardOptions, Views.Bhs(forwardLse, lengths.Length, heads, q));
        Tolerance.AssertClose(forward, decoded.Select(x => (double)x).ToArray(), "forward over cache views vs decode", [lengths.Length, q, heads, d]);
        Tolerance.AssertClose(forwardLse, decodedLse.Select(x => (double)x).ToArray(), "forward LSE vs decode LSE", [lengths.Length, heads, q]);
    }

    /// <summary>Decode reads the caches and writes nothing into them.</summary>
    [Test]
    public void DecodeLeavesTheCachesUntouched()
    {
        const int heads = 4, hkv = 4, d = 32, q = 1;
        var rng = new Rng(64);
        var histories = new[] { 33, 70 }.Select(n =>
        {
            var h = new TokenHistory<BFloat16>(hkv, d);
            h.Add(rng.Normal<BFloat16>(n * hkv * d), rng.Normal<BFloat16>(n * hkv * d));
            return h;
        }).ToArray();
        var cache = DecodeParityTests.BuildContiguous(histories, rng);
        var (paged, ids) = DecodeParityTests.BuildPaged(histories, 8, rng);
        var before = (cache.KeyStorage.ToArray(), cache.ValueStorage.ToArray(), paged.KeyStorage.ToArray(), paged.ValueStorage.ToArray(),
            CacheTestSupport.Snapshot(paged.Allocator), cache.Lengths.ToArray());
        var query = rng.Normal<BFloat16>(2 * q * heads * d);
        CacheTestSupport.Decode(cache, query, q, heads, AttentionOptions.Default);
        CacheTestSupport.Decode(paged, ids, query, q, heads, AttentionOptions.Default);
        CacheTestSupport.AssertSameBits<BFloat16>(cache.KeyStorage, before.Item1, "contiguous keys");
        CacheTestSupport.AssertSameBits<BFloat16>(cache.ValueStorage, before.Item2, "contiguous values");
        CacheTestSupport.AssertSameBits<BFloat16>(paged.KeyStorage, before.Item3, "paged keys");
        CacheTestSupport.AssertSameBits<BFloat16>(paged.ValueStorage, before.Item4, "paged values");
        Assert.That(CacheTestSupport.Snapshot(paged.Allocator), Is.EqualTo(before.Item5));
        Assert.That(cache.Lengths.ToArray(), Is.EqualTo(before.Item6));
    }
}
