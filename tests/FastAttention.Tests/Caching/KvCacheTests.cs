// KvCache: batched and per-sequence appends from any strides, lengths, reset, trim, and rejected
// appends (overflow, bad shapes) that leave lengths and storage exactly as they were.

using FastAttention.Cpu.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Caching;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class KvCacheTests
{
    private const int B = 3, MaxSeq = 20, Hkv = 2, D = 5;

    /// <summary>Appends <paramref name="n"/> random tokens to every sequence in one batched call.</summary>
    private static void AppendBatched<T>(KvCache<T> cache, TokenHistory<T>[] histories, Rng rng, int n, int layout) where T : unmanaged
    {
        int hkv = cache.KvHeads, d = cache.HeadDim, batch = cache.Batch;
        var k = rng.Normal<T>(batch * n * hkv * d);
        var v = rng.Normal<T>(batch * n * hkv * d);
        int[] lengths = [batch, n, hkv, d];
        cache.Append(CacheTestSupport.TokensView(k, lengths, layout, out _), CacheTestSupport.TokensView(v, lengths, (layout + 1) % 4, out _));
        int token = n * hkv * d;
        for (int b = 0; b < batch; b++) histories[b].Add(k[(b * token)..((b + 1) * token)], v[(b * token)..((b + 1) * token)]);
    }

    private static void AppendOne<T>(KvCache<T> cache, int b, TokenHistory<T> history, Rng rng, int n, int layout) where T : unmanaged
    {
        int hkv = cache.KvHeads, d = cache.HeadDim;
        var k = rng.Normal<T>(n * hkv * d);
        var v = rng.Normal<T>(n * hkv * d);
        cache.Append(b, CacheTestSupport.TokensView(k, [n, hkv, d], layout, out _), CacheTestSupport.TokensView(v, [n, hkv, d], (layout + 2) % 4, out _));
        history.Add(k, v);
    }

    private static void AssertHolds<T>(KvCache<T> cache, TokenHistory<T>[] histories, string what) where T : unmanaged
    {
        Assert.That(cache.Lengths.ToArray(), Is.EqualTo(histories.Select(h => h.Length).ToArray()), $"{what}: lengths");
        for (int b = 0; b < cache.Batch; b++)
        {
            var (k, v) = CacheTestSupport.ReadBack(cache, b);
            CacheTestSupport.AssertSameBits<T>(k, histories[b].Keys, $"{what}: keys of sequence {b}");
            CacheTestSupport.AssertSameBits<T>(v, histories[b].Values, $"{what}: values of sequence {b}");
            // The same tokens straight from storage ([B, Hkv, maxSeq, D]).
            for (int p = 0; p < histories[b].Length; p++)
                for (int h = 0; h < cache.KvHeads; h++)
                {
                    int at = ((b * cache.KvHeads + h) * cache.MaxSequenceLength + p) * cache.HeadDim;
                    int from = (p * cache.KvHeads + h) * cache.HeadDim;
                    CacheTestSupport.AssertSameBits<T>(cache.KeyStorage.Slice(at, cache.HeadDim), k.AsSpan(from, cache.HeadDim), $"{what}: key storage [{b},{h},{p}]");
                }
        }
    }

    private static TokenHistory<T>[] Histories<T>(int batch, int hkv, int d) where T : unmanaged =>
        [.. Enumerable.Range(0, batch).Select(_ => new TokenHistory<T>(hkv, d))];

    [Test]
    public void NewCacheIsEmptyAndViewsHaveTheShape()
    {
        var cache = new KvCache<float>(B, MaxSeq, Hkv, D);
        Assert.Multiple(() =>
        {
            Assert.That((cache.Batch, cache.MaxSequenceLength, cache.KvHeads, cache.HeadDim), Is.EqualTo((B, MaxSeq, Hkv, D)));
            Assert.That(cache.Lengths.ToArray(), Is.EqualTo(new int[B]));
            Assert.That(cache.Keys.Lengths.ToArray(), Is.EqualTo(new nint[] { B, MaxSeq, Hkv, D }));
            Assert.That(cache.Values.Lengths.ToArray(), Is.EqualTo(new nint[] { B, MaxSeq, Hkv, D }));
            Assert.That(cache.KeyStorage.Length, Is.EqualTo(B * MaxSeq * Hkv * D));
        });
        // Length-1 axes (batch 1, one head, one slot) still give valid views.
        var tiny = new KvCache<Half>(1, 1, 1, 8);
        Assert.That(tiny.Keys.Lengths.ToArray(), Is.EqualTo(new nint[] { 1, 1, 1, 8 }));
    }

    [TestCase(0, 4, 2, 8, "batch")]
    [TestCase(2, 0, 2, 8, "maxSequenceLength")]
    [TestCase(2, 4, 0, 8, "kvHeads")]
    [TestCase(2, 4, 2, -1, "headDim")]
    public void ConstructorRejectsNonPositiveSizes(int batch, int maxSeq, int hkv, int d, string param)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => _ = new KvCache<float>(batch, maxSeq, hkv, d))!;
        Assert.That(ex.ParamName, Is.EqualTo(param));
    }

    [Test]
    public void ConstructorRejectsTooLargeAndUnsupportedTypes()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => _ = new KvCache<float>(4, 1 << 28, 2, 8))!;
        Assert.That(ex.Message, Does.Contain((4L << 28) * 16 + "").And.Contain(Array.MaxLength.ToString()), ex.Message);
        Assert.Throws<ArgumentException>(() => _ = new KvCache<double>(1, 4, 1, 8));
        Assert.Throws<ArgumentException>(() => _ = new KvCache<int>(1, 4, 1, 8));
    }

    [TestCase("f32", 0)]
    [TestCase("f32", 1)]
    [TestCase("f32", 2)]
    [TestCase("f32", 3)]
    [TestCase("f16", 1)]
    [TestCase("bf16", 2)]
    public void AppendsFromAnyLayoutReadBack(string dtype, int layout)
    {
        switch (dtype)
        {
            case "f32": AppendsReadBack<float>(layout); break;
            case "f16": AppendsReadBack<Half>(layout); break;
            default: AppendsReadBack<BFloat16>(layout); break;
        }
    }

    private static void AppendsReadBack<T>(int layout) where T : unmanaged
    {
        var rng = new Rng(10 + (ulong)layout);
        var cache = new KvCache<T>(B, MaxSeq, Hkv, D);
        var h = Histories<T>(B, Hkv, D);
        string name = CacheTestSupport.LayoutNames[layout];
        AppendBatched(cache, h, rng, 4, layout);
        AssertHolds(cache, h, $"batched 4 ({name})");
        AppendBatched(cache, h, rng, 1, (layout + 1) % 4);
        AssertHolds(cache, h, "batched 1");
        AppendOne(cache, 1, h[1], rng, 6, layout);
        AppendOne(cache, 0, h[0], rng, 1, (layout + 3) % 4);
        AppendOne(cache, 1, h[1], rng, 2, layout);
        AssertHolds(cache, h, $"per-sequence ({name})");
        AppendBatched(cache, h, rng, 3, layout);
        AssertHolds(cache, h, "batched after ragged");
        AppendOne(cache, 2, h[2], rng, MaxSeq - h[2].Length, layout);
        AssertHolds(cache, h, "filled to capacity");
    }

    [Test]
    public void AppendingZeroTokensChangesNothing()
    {
        var rng = new Rng(3);
        var cache = new KvCache<float>(B, MaxSeq, Hkv, D);
        var h = Histories<float>(B, Hkv, D);
        AppendBatched(cache, h, rng, 2, 0);
        var keys = cache.KeyStorage.ToArray();
        AppendBatched(cache, h, rng, 0, 0);
        AppendOne(cache, 1, h[1], rng, 0, 1);
        AssertHolds(cache, h, "after empty appends");
        CacheTestSupport.AssertSameBits<float>(cache.KeyStorage, keys, "key storage");
    }

    [Test]
    public void ResetAndTrim()
    {
        var rng = new Rng(4);
        var cache = new KvCache<float>(B, MaxSeq, Hkv, D);
        var h = Histories<float>(B, Hkv, D);
        AppendBatched(cache, h, rng, 7, 0);
        cache.Trim(1, 3);
        h[1].Trim(3);
        cache.Trim(2, 7);
        AssertHolds(cache, h, "after trim");
        AppendOne(cache, 1, h[1], rng, 2, 2);
        AssertHolds(cache, h, "append after trim overwrites from the new length");
        cache.Trim(0, 0);
        h[0].Trim(0);
        AssertHolds(cache, h, "trim to 0");

        cache.Reset(2);
        h[2].Trim(0);
        AssertHolds(cache, h, "reset one");
        AppendBatched(cache, h, rng, 1, 3);
        AssertHolds(cache, h, "append after reset");
        cache.Reset();
        foreach (var x in h) x.Trim(0);
        AssertHolds(cache, h, "reset all");
        AppendBatched(cache, h, rng, MaxSeq, 1);
        AssertHolds(cache, h, "full after reset");
    }

    [TestCase(-1)]
    [TestCase(8)]
    public void TrimOutsideTheLengthThrowsAndChangesNothing(int length)
    {
        var rng = new Rng(5);
        var cache = new KvCache<float>(B, MaxSeq, Hkv, D);
        var h = Histories<float>(B, Hkv, D);
        AppendBatched(cache, h, rng, 7, 0);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => cache.Trim(1, length))!;
        Assert.That(ex.ParamName, Is.EqualTo("length"));
        Assert.That(ex.Message, Does.Contain("7").And.Contain(length.ToString()));
        AssertHolds(cache, h, "after rejected trim");
    }

    [TestCase(-1)]
    [TestCase(B)]
    public void SequenceOutsideTheBatchIsRejected(int sequence)
    {
        var cache = new KvCache<float>(B, MaxSeq, Hkv, D);
        var k = new float[Hkv * D];
        foreach (var call in new Action[]
        {
            () => cache.Append(sequence, Views.Strided(k, [1, Hkv, D], [Hkv * D, D, 1]), Views.Strided(k, [1, Hkv, D], [Hkv * D, D, 1])),
            () => cache.Reset(sequence),
            () => cache.Trim(sequence, 0),
        })
        {
            var ex = Assert.Throws<ArgumentOutOfRangeException>(call)!;
            Assert.That(ex.ParamName, Is.EqualTo("sequence"));
            Assert.That(ex.Message, Does.Contain(B.ToString()));
        }
        Assert.That(cache.Lengths.ToArray(), Is.EqualTo(new int[B]));
    }

    /// <summary>A cache with ragged lengths [2, 5, 8] of capacity 10 and stale data in every slot.</summary>
    private static (KvCache<float> Cache, TokenHistory<float>[] H, float[] Keys, float[] Values) Ragged()
    {
        var rng = new Rng(6);
        var cache = new KvCache<float>(B, 10, Hkv, D);
        var h = Histories<float>(B, Hkv, D);
        AppendBatched(cache, h, rng, 10, 0); // every slot written ...
        cache.Trim(0, 2);                    // ... then lengths [2, 5, 8]
        cache.Trim(1, 5);
        cache.Trim(2, 8);
        h[0].Trim(2);
        h[1].Trim(5);
        h[2].Trim(8);
        return (cache, h, cache.KeyStorage.ToArray(), cache.ValueStorage.ToArray());
    }

    private static void AssertUnchanged((KvCache<float> Cache, TokenHistory<float>[] H, float[] Keys, float[] Values) s, string what)
    {
        Assert.That(s.Cache.Lengths.ToArray(), Is.EqualTo(new[] { 2, 5, 8 }), $"{what}: lengths");
        CacheTestSupport.AssertSameBits<float>(s.Cache.KeyStorage, s.Keys, $"{what}: key storage");
        CacheTestSupport.AssertSameBits<float>(s.Cache.ValueStorage, s.Values, $"{what}: value storage");
    }

    [Test]
    public void BatchedOverflowThrowsAndChangesNothing()
    {
        var s = Ragged();
        var rng = new Rng(7);
        var k = rng.Normal<float>(B * 3 * Hkv * D);
        // Sequences 0 and 1 have room for 3 tokens, sequence 2 does not: nothing may be written to any of them.
        var ex = Assert.Throws<ArgumentException>(() =>
            s.Cache.Append(Views.Bshd(k, B, 3, Hkv, D), Views.Bshd(k, B, 3, Hkv, D)))!;
        Assert.Multiple(() =>
        {
            Assert.That(ex.ParamName, Is.EqualTo("key"));
            Assert.That(ex.Message, Does.Contain("3 tokens").And.Contain("sequence 2").And.Contain("length 8").And.Contain("10"), ex.Message);
        });
        AssertUnchanged(s, "batched overflow");
        s.Cache.Append(Views.Bshd(k, B, 2, Hkv, D), Views.Bshd(k, B, 2, Hkv, D));
        Assert.That(s.Cache.Lengths.ToArray(), Is.EqualTo(new[] { 4, 7, 10 }), "an append that fits still works");
    }

    [Test]
    public void PerSequenceOverflowThrowsAndChangesNothing()
    {
        var s = Ragged();
        var k = new Rng(8).Normal<float>(6 * Hkv * D);
        var ex = Assert.Throws<ArgumentException>(() =>
            s.Cache.Append(1, Views.Strided(k, [6, Hkv, D], [Hkv * D, D, 1]), Views.Strided(k, [6, Hkv, D], [Hkv * D, D, 1])))!;
        Assert.That(ex.ParamName, Is.EqualTo("key"));
        Assert.That(ex.Message, Does.Contain("6 tokens").And.Contain("sequence 1").And.Contain("length 5").And.Contain("10"), ex.Message);
        AssertUnchanged(s, "per-sequence overflow");
    }

    private static IEnumerable<TestCaseData> BadShapes()
    {
        // (key lengths, value lengths, sequence or -1 for batched, param, message parts)
        yield return new TestCaseData(new[] { B, 2, Hkv + 1, D }, new[] { B, 2, Hkv + 1, D }, -1, "key", new[] { "[3, 2, 3, 5]", "Hkv" }).SetName("Batched wrong Hkv");
        yield return new TestCaseData(new[] { B, 2, Hkv, D - 1 }, new[] { B, 2, Hkv, D - 1 }, -1, "key", new[] { "[3, 2, 2, 4]" }).SetName("Batched wrong D");
        yield return new TestCaseData(new[] { B + 1, 2, Hkv, D }, new[] { B + 1, 2, Hkv, D }, -1, "key", new[] { "[4, 2, 2, 5]" }).SetName("Batched wrong B");
        yield return new TestCaseData(new[] { 2, Hkv, D }, new[] { 2, Hkv, D }, -1, "key", new[] { "[2, 2, 5]" }).SetName("Batched rank 3");
        yield return new TestCaseData(new[] { B, 2, Hkv, D }, new[] { B, 3, Hkv, D }, -1, "value", new[] { "[3, 3, 2, 5]", "[3, 2, 2, 5]" }).SetName("Batched value n differs");
        yield return new TestCaseData(new[] { B, 2, Hkv, D }, new[] { B, 2, Hkv, D + 1 }, -1, "value", new[] { "[3, 2, 2, 6]" }).SetName("Batched value wrong D");
        yield return new TestCaseData(new[] { 2, Hkv, D + 3 }, new[] { 2, Hkv, D + 3 }, 1, "key", new[] { "[2, 2, 8]" }).SetName("Per-sequence wrong D");
        yield return new TestCaseData(new[] { 2, 1, D }, new[] { 2, 1, D }, 1, "key", new[] { "[2, 1, 5]" }).SetName("Per-sequence wrong Hkv");
        yield return new TestCaseData(new[] { 1, 2, Hkv, D }, new[] { 1, 2, Hkv, D }, 1, "key", new[] { "[1, 2, 2, 5]" }).SetName("Per-sequence rank 4");
        yield return new TestCaseData(new[] { 2, Hkv, D }, new[] { 1, Hkv, D }, 1, "value", new[] { "[1, 2, 5]", "[2, 2, 5]" }).SetName("Per-sequence value n differs");
        yield return new TestCaseData(new[] { 2, Hkv, D }, new[] { 2, Hkv }, 1, "value", new[] { "[2, 2]" }).SetName("Per-sequence value rank 2");
    }

    [TestCaseSource(nameof(BadShapes))]
    public void BadShapesAreRejectedAndChangeNothing(int[] keyLengths, int[] valueLengths, int sequence, string param, string[] parts)
    {
        var s = Ragged();
        var rng = new Rng(9);
        var k = rng.Normal<float>(keyLengths.Aggregate(1, (x, y) => x * y));
        var v = rng.Normal<float>(valueLengths.Aggregate(1, (x, y) => x * y));
        ArgumentException ex;
        if (sequence < 0)
        {
            ex = Assert.Throws<ArgumentException>(() => s.Cache.Append(
                CacheTestSupport.TokensView(k, keyLengths, 0, out _), CacheTestSupport.TokensView(v, valueLengths, 0, out _)))!;
        }
        else
        {
            ex = Assert.Throws<ArgumentException>(() => s.Cache.Append(sequence,
                CacheTestSupport.TokensView(k, keyLengths, 0, out _), CacheTestSupport.TokensView(v, valueLengths, 0, out _)))!;
        }
        Assert.That(ex.ParamName, Is.EqualTo(param), ex.Message);
        foreach (string part in parts) Assert.That(ex.Message, Does.Contain(part));
        AssertUnchanged(s, "bad shape");
    }
}
