// PagedKvCache: contents read back through the block tables ([Hkv, pageCount, pageSize, D] pool),
// fork + divergent appends (copy-on-write of the data), and rejected appends that leave the pool and
// the allocator exactly as they were.

using FastAttention.Cpu.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Caching;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class PagedKvCacheTests
{
    private const int Hkv = 2, D = 6;

    private static void Append<T>(PagedKvCache<T> cache, int seq, TokenHistory<T> history, Rng rng, int n, int layout) where T : unmanaged
    {
        var k = rng.Normal<T>(n * cache.KvHeads * cache.HeadDim);
        var v = rng.Normal<T>(n * cache.KvHeads * cache.HeadDim);
        int[] lengths = [n, cache.KvHeads, cache.HeadDim];
        cache.Append(seq, CacheTestSupport.TokensView(k, lengths, layout, out _), CacheTestSupport.TokensView(v, lengths, (layout + 1) % 4, out _));
        history.Add(k, v);
    }

    private static void AssertHolds<T>(PagedKvCache<T> cache, IReadOnlyDictionary<int, TokenHistory<T>> histories, string what) where T : unmanaged
    {
        Assert.That(cache.Allocator.Sequences, Is.EquivalentTo(histories.Keys), $"{what}: live sequences");
        foreach (var (seq, h) in histories)
        {
            Assert.That(cache.Length(seq), Is.EqualTo(h.Length), $"{what}: length of {seq}");
            var (k, v) = CacheTestSupport.ReadBack(cache, seq);
            CacheTestSupport.AssertSameBits<T>(k, h.Keys, $"{what}: keys of {seq}");
            CacheTestSupport.AssertSameBits<T>(v, h.Values, $"{what}: values of {seq}");
        }
    }

    private static (T[] Keys, T[] Values, string Allocator) State<T>(PagedKvCache<T> cache) where T : unmanaged =>
        (cache.KeyStorage.ToArray(), cache.ValueStorage.ToArray(), CacheTestSupport.Snapshot(cache.Allocator));

    private static void AssertState<T>(PagedKvCache<T> cache, (T[] Keys, T[] Values, string Allocator) before, string what) where T : unmanaged
    {
        Assert.That(CacheTestSupport.Snapshot(cache.Allocator), Is.EqualTo(before.Allocator), $"{what}: allocator");
        CacheTestSupport.AssertSameBits<T>(cache.KeyStorage, before.Keys, $"{what}: key pool");
        CacheTestSupport.AssertSameBits<T>(cache.ValueStorage, before.Values, $"{what}: value pool");
    }

    [Test]
    public void NewCacheHasThePoolAndAllocator()
    {
        var cache = new PagedKvCache<float>(7, 16, Hkv, D);
        Assert.Multiple(() =>
        {
            Assert.That((cache.PageSize, cache.KvHeads, cache.HeadDim), Is.EqualTo((16, Hkv, D)));
            Assert.That((cache.Allocator.PageCount, cache.Allocator.PageSize, cache.Allocator.FreePages), Is.EqualTo((7, 16, 7)));
            Assert.That(cache.KeyStorage.Length, Is.EqualTo(7 * 16 * Hkv * D));
            Assert.That(cache.ValueStorage.Length, Is.EqualTo(7 * 16 * Hkv * D));
        });
    }

    [TestCase(0, 16, 2, 8, "pageCount")]
    [TestCase(4, 0, 2, 8, "pageSize")]
    [TestCase(4, 16, 0, 8, "kvHeads")]
    [TestCase(4, 16, 2, 0, "headDim")]
    public void ConstructorRejectsNonPositiveSizes(int pageCount, int pageSize, int hkv, int d, string param)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => _ = new PagedKvCache<float>(pageCount, pageSize, hkv, d))!;
        Assert.That(ex.ParamName, Is.EqualTo(param));
    }

    [Test]
    public void ConstructorRejectsTooLargeAndUnsupportedTypes()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => _ = new PagedKvCache<Half>(1 << 20, 1 << 10, 8, 128))!;
        Assert.That(ex.ParamName, Is.EqualTo("pageCount"));
        Assert.That(ex.Message, Does.Contain(((1L << 30) * 1024).ToString()), ex.Message);
        Assert.Throws<ArgumentException>(() => _ = new PagedKvCache<double>(4, 16, 1, 8));
    }

    [TestCase("f32", 8)]
    [TestCase("f32", 5)]
    [TestCase("f16", 16)]
    [TestCase("bf16", 1)]
    public void InterleavedAppendsReadBackThroughScatteredTables(string dtype, int pageSize)
    {
        switch (dtype)
        {
            case "f32": Interleaved<float>(pageSize); break;
            case "f16": Interleaved<Half>(pageSize); break;
            default: Interleaved<BFloat16>(pageSize); break;
        }
    }

    private static void Interleaved<T>(int pageSize) where T : unmanaged
    {
        var rng = new Rng(20 + (ulong)pageSize);
        var cache = new PagedKvCache<T>(200, pageSize, Hkv, D);
        var h = new Dictionary<int, TokenHistory<T>>();
        for (int i = 0; i < 4; i++) h[cache.CreateSequence()] = new TokenHistory<T>(Hkv, D);
        var ids = h.Keys.ToArray();
        for (int step = 0; step < 60; step++)
        {
            int seq = ids[rng.Next(0, ids.Length - 1)];
            Append(cache, seq, h[seq], rng, rng.Next(0, 2 * pageSize + 1), step % 4);
            if (step == 30)
            {
                // Free one sequence in the middle so its pages come back out of order.
                cache.Free(ids[1]);
                h.Remove(ids[1]);
                ids = h.Keys.ToArray();
            }
        }
        AssertHolds(cache, h, "interleaved");
        bool scattered = h.Keys.Any(s =>
        {
            var t = cache.Allocator.BlockTable(s).ToArray();
            return t.Zip(t.Skip(1)).Any(p => p.Second != p.First + 1);
        });
        Assert.That(scattered, Is.True, "the test meant to produce non-contiguous block tables");
    }

    [TestCase(8, 13)]
    [TestCase(8, 16)]
    [TestCase(1, 5)]
    public void ForkThenDivergentAppendsKeepBothSequences(int pageSize, int prefix)
    {
        var rng = new Rng(30);
        var cache = new PagedKvCache<float>(40, pageSize, Hkv, D);
        var h = new Dictionary<int, TokenHistory<float>>();
        int s = cache.CreateSequence();
        h[s] = new TokenHistory<float>(Hkv, D);
        Append(cache, s, h[s], rng, prefix, 2);
        int f = cache.Fork(s);
        h[f] = h[s].Clone();
        AssertHolds(cache, h, "right after the fork");

        var originalPages = cache.Allocator.BlockTable(s).ToArray();
        var originalKeys = CacheTestSupport.ReadBack(cache, s).Keys;
        Append(cache, f, h[f], rng, 3, 1);     // copy-on-write of a partial last page, if any
        AssertHolds(cache, h, "fork appended");
        Assert.That(cache.Allocator.BlockTable(s).ToArray(), Is.EqualTo(originalPages));
        CacheTestSupport.AssertSameBits<float>(CacheTestSupport.ReadBack(cache, s).Keys, originalKeys, "the original's keys");

        Append(cache, s, h[s], rng, 2 * pageSize + 1, 3);
        AssertHolds(cache, h, "original appended");
        int g = cache.Fork(f);
        h[g] = h[f].Clone();
        Append(cache, g, h[g], rng, 1, 0);
        Append(cache, f, h[f], rng, 1, 0);
        AssertHolds(cache, h, "second-generation fork");
        cache.Free(f);
        h.Remove(f);
        Append(cache, g, h[g], rng, pageSize + 2, 2);
        AssertHolds(cache, h, "after freeing the middle one");
    }

    [Test]
    public void TrimmedForkCopiesBeforeOverwritingASharedSlot()
    {
        var rng = new Rng(31);
        var cache = new PagedKvCache<float>(20, 8, Hkv, D);
        var h = new Dictionary<int, TokenHistory<float>>();
        int s = cache.CreateSequence();
        h[s] = new TokenHistory<float>(Hkv, D);
        Append(cache, s, h[s], rng, 16, 0);
        int f = cache.Fork(s);
        h[f] = h[s].Clone();
        cache.Allocator.Trim(f, 11);
        h[f].Trim(11);
        Append(cache, f, h[f], rng, 3, 1);  // slots 11..13 of a page s still reads
        AssertHolds(cache, h, "trimmed fork appended");
    }

    [Test]
    public void ZeroTokenAppendChangesNothing()
    {
        var rng = new Rng(32);
        var cache = new PagedKvCache<float>(10, 4, Hkv, D);
        int s = cache.CreateSequence();
        var h = new TokenHistory<float>(Hkv, D);
        Append(cache, s, h, rng, 6, 0);
        int f = cache.Fork(s);
        var before = State(cache);
        Append(cache, f, h.Clone(), rng, 0, 0);
        Append(cache, s, h, rng, 0, 2);
        AssertState(cache, before, "empty appends");
    }

    private static (PagedKvCache<float> Cache, int S, int F) NearlyFull()
    {
        var rng = new Rng(33);
        var cache = new PagedKvCache<float>(6, 4, Hkv, D);
        cache.KeyStorage.Fill(float.NaN);
        cache.ValueStorage.Fill(-7f);
        int s = cache.CreateSequence(), t = cache.CreateSequence();
        Append(cache, s, new TokenHistory<float>(Hkv, D), rng, 10, 0); // 3 pages, last has 2 slots
        Append(cache, t, new TokenHistory<float>(Hkv, D), rng, 9, 0);  // 3 pages: pool full
        int f = cache.Fork(s);
        return (cache, s, f);
    }

    [Test]
    public void ExhaustionLeavesPoolAndAllocatorUnchanged()
    {
        var (cache, s, f) = NearlyFull();
        var before = State(cache);
        var k = new Rng(34).Normal<float>(3 * Hkv * D);
        foreach (var (seq, n) in new[] { (s, 3), (f, 1), (s, 1) })
        {
            var ex = Assert.Throws<ArgumentOutOfRangeException>(() => cache.Append(seq,
                Views.Strided(k[..(n * Hkv * D)], [n, Hkv, D], [Hkv * D, D, 1]), Views.Strided(k[..(n * Hkv * D)], [n, Hkv, D], [Hkv * D, D, 1])))!;
            Assert.That(ex.ParamName, Is.EqualTo("tokens"));
            Assert.That(ex.Message, Does.Contain($"{n} tokens").And.Contain("0 of 6"), ex.Message);
            AssertState(cache, before, $"append {n} to {seq}");
        }
    }

    [Test]
    public void RejectedAppendsLeavePoolAndAllocatorUnchanged()
    {
        var (cache, s, _) = NearlyFull();
        var before = State(cache);
        var k = new Rng(35).Normal<float>(2 * Hkv * (D + 1));
        var cases = new (string Param, Action Call)[]
        {
            ("sequence", () => cache.Append(99, Views.Strided(k, [1, Hkv, D], [Hkv * D, D, 1]), Views.Strided(k, [1, Hkv, D], [Hkv * D, D, 1]))),
            ("key", () => cache.Append(s, Views.Strided(k, [1, Hkv, D + 1], [Hkv * (D + 1), D + 1, 1]), Views.Strided(k, [1, Hkv, D + 1], [Hkv * (D + 1), D + 1, 1]))),
            ("key", () => cache.Append(s, Views.Strided(k, [1, 1, D], [D, D, 1]), Views.Strided(k, [1, 1, D], [D, D, 1]))),
            ("key", () => cache.Append(s, Views.Strided(k, [1, 1, Hkv, D], [Hkv * D, Hkv * D, D, 1]), Views.Strided(k, [1, 1, Hkv, D], [Hkv * D, Hkv * D, D, 1]))),
            ("value", () => cache.Append(s, Views.Strided(k, [1, Hkv, D], [Hkv * D, D, 1]), Views.Strided(k, [2, Hkv, D], [Hkv * D, D, 1]))),
            ("value", () => cache.Append(s, Views.Strided(k, [1, Hkv, D], [Hkv * D, D, 1]), Views.Strided(k, [1, Hkv, D - 1], [Hkv * D, D, 1]))),
        };
        foreach (var (param, call) in cases)
        {
            var ex = Assert.Throws<ArgumentException>(() => call())!;
            Assert.That(ex.ParamName, Is.EqualTo(param), ex.Message);
            AssertState(cache, before, $"rejected ({param}): {ex.Message}");
        }
    }
}
