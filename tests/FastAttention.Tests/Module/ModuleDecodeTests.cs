// Incremental decoding through MultiHeadAttention: over a contiguous KvCache and a PagedKvCache, token
// by token and in chunks, MHA/GQA/MQA, with and without a sliding window, the stacked outputs equal the
// full causal forward. Failures (overflow, pool exhaustion, sparse configs, wrong shapes) throw before
// anything is appended or written.

using FastAttention.Cpu.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Module;

/// <summary>A causal config for decoding (D = Model / H unless given).</summary>
public sealed record DecodeCase(string Name, int Model, int H, int Hkv, int D = 0, int WindowLeft = -1, float? Scale = null, bool Bias = true)
{
    internal AttentionConfig Config() => new(Model, H, Hkv, D, causal: true, windowLeft: WindowLeft, scale: Scale, bias: Bias);

    public override string ToString() => Name;
}

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class ModuleDecodeTests
{
    private static readonly DecodeCase[] Configs =
    [
        new("MHA H4", 32, 4, 4),
        new("GQA H4/2 no bias", 32, 4, 2, Bias: false),
        new("MQA H4/1", 32, 4, 1),
        new("MHA H4 window 5", 32, 4, 4, WindowLeft: 5),
        new("GQA H6/2 D5 window 3 scale 0.6", 30, 6, 2, 5, WindowLeft: 3, Scale: 0.6f),
        new("MQA H4/1 window 0", 32, 4, 1, WindowLeft: 0),
    ];

    private static readonly (string Name, int[] Chunks)[] Schedules =
    [
        ("token by token", Enumerable.Repeat(1, 30).ToArray()),
        ("chunks 1,7,3,32,1,2", [1, 7, 3, 32, 1, 2]),
    ];

    private static IEnumerable<TestCaseData> ConfigsBySchedule() =>
        from c in Configs from s in Schedules select new TestCaseData(c, s.Chunks).SetArgDisplayNames(c.Name, s.Name);

    private static IEnumerable<TestCaseData> ConfigsByPageSize() =>
        from c in Configs from p in new[] { 4, 16 } select new TestCaseData(c, p).SetArgDisplayNames(c.Name, $"page {p}");

    /// <summary>Rows [start, start + n) of a <c>[batch, total, model]</c> array as a strided <c>[batch, n, model]</c> view.</summary>
    private static TensorSpan<float> Rows(float[] data, int batch, int total, int start, int n, int model) =>
        TensorLayouts.View(data.AsSpan(start * model), [batch, n, model], [(nint)total * model, model, 1]);

    /// <summary>Rows [start, start + n) of a <c>[batch, total, model]</c> array, copied to a contiguous <c>[batch, n, model]</c> array.</summary>
    private static float[] Slice(float[] data, int batch, int total, int start, int n, int model)
    {
        var r = new float[batch * n * model];
        for (int b = 0; b < batch; b++) Array.Copy(data, (b * total + start) * model, r, b * n * model, n * model);
        return r;
    }

    /// <summary>Writes a contiguous <c>[batch, n, model]</c> array to rows [start, start + n) of a <c>[batch, total, model]</c> array.</summary>
    private static void Unslice(float[] chunk, float[] data, int batch, int total, int start, int n, int model)
    {
        for (int b = 0; b < batch; b++) Array.Copy(chunk, b * n * model, data, (b * total + start) * model, n * model);
    }

    /// <summary>Runs the contiguous-cache forward on rows [start, start + n) and stores the output rows into <paramref name="stacked"/>.</summary>
    private static void DecodeRows(MultiHeadAttention m, KvCache<float> cache, float[] x, float[] stacked, int batch, int total, int start, int n)
    {
        int model = m.Config.ModelDim;
        var xin = Slice(x, batch, total, start, n, model);
        var yout = ModuleData.Filled(xin.Length, float.NaN);
        m.Forward(ModuleData.Act(xin, batch, n, model), ModuleData.Act(yout, batch, n, model), cache);
        Unslice(yout, stacked, batch, total, start, n, model);
    }

    /// <summary>Stacked decode outputs vs the full causal forward (fp32 vs fp32; measured max difference 1e-6).</summary>
    private static void AssertEqualsFull(float[] stacked, float[] full, string what, int[] dims) =>
        ModuleData.AssertSame(stacked, full, what, dims);

    private static void Poison<T>(Span<T> storage, T value) => storage.Fill(value);

    [TestCaseSource(nameof(ConfigsBySchedule))]
    public void KvCacheStackedOutputsEqualFullCausalForward(DecodeCase t, int[] chunks)
    {
        var c = t.Config();
        var m = ModuleData.Create(c, 21);
        int batch = 2, total = chunks.Sum(), model = c.ModelDim;
        var x = ModuleData.Input(batch, total, model, 22);
        var (full, _) = ModuleData.Run(m, x, batch, total, null, total);

        var cache = new KvCache<float>(batch, total + 3, c.KvHeads, c.HeadDim);
        Poison(cache.KeyStorage, float.NaN); // slots past the lengths must never be read
        Poison(cache.ValueStorage, float.NaN);
        var stacked = ModuleData.Filled(batch * total * model, float.NaN);
        int pos = 0;
        foreach (int n in chunks)
        {
            DecodeRows(m, cache, x, stacked, batch, total, pos, n);
            pos += n;
            Assert.That(cache.Lengths.ToArray(), Is.EqualTo(new[] { pos, pos }), "cache lengths after the chunk");
        }
        AssertEqualsFull(stacked, full, $"{t.Name}: stacked decode vs full causal forward", [batch, total, model]);
        var reference = ModuleReference.Forward(m, x, batch, total, null, total);
        Tolerance.AssertClose(stacked, reference.Output, $"{t.Name}: stacked decode vs double reference", [batch, total, model],
            ModuleReference.Abs, ModuleReference.Rel);
    }

    [TestCaseSource(nameof(ConfigsByPageSize))]
    public void PagedStackedOutputsEqualFullCausalForward(DecodeCase t, int pageSize)
    {
        // Three sequences of different lengths: A prefilled with 5 tokens alone, B with 4 + 5 alone, C empty;
        // then the batch [C, A, B] (not in id order) decodes chunks 1, 7, 3, 16, 1, 1.
        var c = t.Config();
        var m = ModuleData.Create(c, 23);
        int model = c.ModelDim;
        var cache = new PagedKvCache<float>(40, pageSize, c.KvHeads, c.HeadDim);
        Poison(cache.KeyStorage, float.NaN);
        Poison(cache.ValueStorage, float.NaN);
        int a = cache.CreateSequence(), b = cache.CreateSequence(), cs = cache.CreateSequence();
        var streams = new Dictionary<int, List<float>> { [a] = [], [b] = [], [cs] = [] };
        var outputs = new Dictionary<int, List<float>> { [a] = [], [b] = [], [cs] = [] };
        var rng = new Rng(24);

        void Step(int[] sequences, int n)
        {
            var xin = rng.Normal<float>(sequences.Length * n * model);
            var yout = ModuleData.Filled(xin.Length, float.NaN);
            m.Forward(ModuleData.Act(xin, sequences.Length, n, model), ModuleData.Act(yout, sequences.Length, n, model), cache, sequences);
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

        foreach (var (seq, name) in new[] { (a, "A"), (b, "B"), (cs, "C") })
        {
            var xs = streams[seq].ToArray();
            int len = xs.Length / model;
            Assert.That(cache.Length(seq), Is.EqualTo(len), $"sequence {name} length");
            var (full, _) = ModuleData.Run(m, xs, 1, len, null, len);
            AssertEqualsFull(outputs[seq].ToArray(), full, $"{t.Name}, page {pageSize}: sequence {name} stacked decode vs full causal forward", [1, len, model]);
        }
    }

    [Test]
    public void PagedForkedSequencesDecodeIndependently()
    {
        // A has 6 tokens (page 4: the second page is half full); F = fork(A) shares both pages. Decoding
        // [A, F] with different tokens copies the shared half page (copy-on-write); each then equals the
        // full forward of its own stream (common prefix + its tokens).
        var c = new AttentionConfig(32, 4, 2, causal: true);
        var m = ModuleData.Create(c, 25);
        int model = 32;
        var cache = new PagedKvCache<float>(16, 4, c.KvHeads, c.HeadDim);
        int a = cache.CreateSequence();
        var prefix = ModuleData.Input(1, 6, model, 26);
        var prefixOut = new float[6 * model];
        m.Forward(ModuleData.Act(prefix, 1, 6, model), ModuleData.Act(prefixOut, 1, 6, model), cache, [a]);
        int f = cache.Fork(a);
        var streams = new[] { prefix.ToList(), prefix.ToList() };
        var outputs = new[] { prefixOut.ToList(), prefixOut.ToList() };
        var rng = new Rng(27);
        foreach (int n in new[] { 1, 3, 5, 1 })
        {
            var xin = rng.Normal<float>(2 * n * model);
            var yout = ModuleData.Filled(xin.Length, float.NaN);
            m.Forward(ModuleData.Act(xin, 2, n, model), ModuleData.Act(yout, 2, n, model), cache, [a, f]);
            for (int i = 0; i < 2; i++)
            {
                streams[i].AddRange(xin.AsSpan(i * n * model, n * model));
                outputs[i].AddRange(yout.AsSpan(i * n * model, n * model));
            }
        }
        for (int i = 0; i < 2; i++)
        {
            var xs = streams[i].ToArray();
            int len = xs.Length / model;
            var (full, _) = ModuleData.Run(m, xs, 1, len, null, len);
            AssertEqualsFull(outputs[i].ToArray(), full, i == 0 ? "original" : "fork", [1, len, model]);
        }
    }

    [Test]
    public void KvCacheSequencesOfDifferentLengthsAfterTrim()
    {
        // Both sequences prefilled with 10 tokens, then sequence 1 rolled back to 4 (Trim): the next chunks
        // attend to 10 + new and 4 + new tokens respectively.
        var c = new AttentionConfig(32, 4, 1, causal: true, windowLeft: 6);
        var m = ModuleData.Create(c, 28);
        int model = 32;
        var cache = new KvCache<float>(2, 20, c.KvHeads, c.HeadDim);
        var pre = ModuleData.Input(2, 10, model, 29);
        var preOut = new float[pre.Length];
        m.Forward(ModuleData.Act(pre, 2, 10, model), ModuleData.Act(preOut, 2, 10, model), cache);
        cache.Trim(1, 4);
        var streams = new[] { pre.AsSpan(0, 10 * model).ToArray().ToList(), pre.AsSpan(10 * model, 4 * model).ToArray().ToList() };
        var outputs = new[] { preOut.AsSpan(0, 10 * model).ToArray().ToList(), preOut.AsSpan(10 * model, 4 * model).ToArray().ToList() };
        var rng = new Rng(30);
        foreach (int n in new[] { 1, 3, 2 })
        {
            var xin = rng.Normal<float>(2 * n * model);
            var yout = ModuleData.Filled(xin.Length, float.NaN);
            m.Forward(ModuleData.Act(xin, 2, n, model), ModuleData.Act(yout, 2, n, model), cache);
            for (int i = 0; i < 2; i++)
            {
                streams[i].AddRange(xin.AsSpan(i * n * model, n * model));
                outputs[i].AddRange(yout.AsSpan(i * n * model, n * model));
            }
        }
        Assert.That(cache.Lengths.ToArray(), Is.EqualTo(new[] { 16, 10 }));
        for (int i = 0; i < 2; i++)
        {
            var xs = streams[i].ToArray();
            int len = xs.Length / model;
            var (full, _) = ModuleData.Run(m, xs, 1, len, null, len);
            AssertEqualsFull(outputs[i].ToArray(), full, $"sequence {i}", [1, len, model]);
        }
    }

    [Test]
    public void KvCacheRowSlicedViewsOfOneSequence()
    {
        // Batch 1: input and output are row slices of the whole-sequence arrays (no copies).
        var c = new AttentionConfig(32, 4, 2, causal: true, windowLeft: 7);
        var m = ModuleData.Create(c, 51);
        int total = 20, model = 32;
        var x = ModuleData.Input(1, total, model, 52);
        var (full, _) = ModuleData.Run(m, x, 1, total, null, total);
        var cache = new KvCache<float>(1, total, c.KvHeads, c.HeadDim);
        var stacked = ModuleData.Filled(total * model, float.NaN);
        int pos = 0;
        foreach (int n in new[] { 3, 1, 9, 1, 6 })
        {
            m.Forward(Rows(x, 1, total, pos, n, model), Rows(stacked, 1, total, pos, n, model), cache);
            pos += n;
        }
        AssertEqualsFull(stacked, full, "row-sliced decode vs full causal forward", [1, total, model]);
    }

    /// <summary>
    /// Views the projections cannot read or write in place: a [2, 3, M] input or output sliced out of
    /// [2, 5, M] (batch stride 5M, rows do not collapse to one stride), or an output with stride 2 on the
    /// features. The module may support them (results must then be right) or reject them, but a rejection
    /// must come before anything changes: no token appended, no output element written.
    /// </summary>
    [TestCase("input rows of [2, 5, M]", false)]
    [TestCase("output rows of [2, 5, M]", false)]
    [TestCase("output features stride 2", false)]
    [TestCase("input rows of [2, 5, M]", true)]
    [TestCase("output rows of [2, 5, M]", true)]
    [TestCase("output features stride 2", true)]
    public void UnsupportedViewsEitherWorkOrChangeNothing(string layout, bool paged)
    {
        var c = new AttentionConfig(32, 4, 2, causal: true);
        var m = ModuleData.Create(c, 53);
        int model = 32, n = 3;
        var pre = ModuleData.Input(2, 4, model, 54);
        var x = ModuleData.Input(2, n, model, 55);

        // Twin caches with the same 4-token prefill: one for the call under test, one for the expected output.
        KvCache<float>? kv = null, kvTwin = null;
        PagedKvCache<float>? pc = null, pcTwin = null;
        int[] seqs = [];
        void Prefill(out KvCache<float>? k, out PagedKvCache<float>? p)
        {
            k = null;
            p = null;
            var o = new float[pre.Length];
            if (paged)
            {
                p = new PagedKvCache<float>(8, 4, c.KvHeads, c.HeadDim);
                seqs = [p.CreateSequence(), p.CreateSequence()];
                m.Forward(ModuleData.Act(pre, 2, 4, model), ModuleData.Act(o, 2, 4, model), p, seqs);
            }
            else
            {
                k = new KvCache<float>(2, 8, c.KvHeads, c.HeadDim);
                m.Forward(ModuleData.Act(pre, 2, 4, model), ModuleData.Act(o, 2, 4, model), k);
            }
        }
        Prefill(out kv, out pc);
        Prefill(out kvTwin, out pcTwin);
        var expected = new float[2 * n * model];
        if (paged) m.Forward(ModuleData.Act(x, 2, n, model), ModuleData.Act(expected, 2, n, model), pcTwin!, seqs);
        else m.Forward(ModuleData.Act(x, 2, n, model), ModuleData.Act(expected, 2, n, model), kvTwin!);

        var xBig = ModuleData.Filled(2 * 5 * model, float.NaN);
        Unslice(x, xBig, 2, 5, 1, n, model);
        float[] yBig;
        TensorSpan<float> input = ModuleData.Act(x, 2, n, model), output;
        string param;
        if (layout.StartsWith("input"))
        {
            input = Rows(xBig, 2, 5, 1, n, model);
            yBig = ModuleData.Filled(2 * n * model, ModuleData.Sentinel);
            output = ModuleData.Act(yBig, 2, n, model);
            param = "input";
        }
        else if (layout.StartsWith("output rows"))
        {
            yBig = ModuleData.Filled(2 * 5 * model, ModuleData.Sentinel);
            output = Rows(yBig, 2, 5, 1, n, model);
            param = "output";
        }
        else
        {
            yBig = ModuleData.Filled(2 * n * 2 * model, ModuleData.Sentinel);
            output = Views.Strided(yBig, [2, n, model], [n * 2 * model, 2 * model, 2]);
            param = "output";
        }
        var kvState = kv is null ? null : new KvState(kv);
        var pState = pc is null ? null : new PagedState(pc);
        var yBefore = (float[])yBig.Clone();
        try
        {
            if (paged) m.Forward(input, output, pc!, seqs);
            else m.Forward(input, output, kv!);
        }
        catch (ArgumentException ex)
        {
            Assert.That(ex.ParamName, Is.EqualTo(param), ex.Message);
            kvState?.AssertUnchanged(kv!);
            pState?.AssertUnchanged(pc!);
            Assert.That(yBig, Is.EqualTo(yBefore), "a rejected call must not write the output");
            return;
        }
        // Accepted: the view's elements hold the right output, the rest of the buffer is untouched.
        var got = new float[expected.Length];
        var touched = new bool[yBig.Length];
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < n; i++)
                for (int f = 0; f < model; f++)
                {
                    int at = layout.StartsWith("output rows") ? (b * 5 + 1 + i) * model + f
                        : layout.StartsWith("output") ? (b * n + i) * 2 * model + 2 * f : (b * n + i) * model + f;
                    got[(b * n + i) * model + f] = yBig[at];
                    touched[at] = true;
                }
        ModuleData.AssertSame(got, expected, "output through the view", [2, n, model]);
        for (int i = 0; i < yBig.Length; i++)
        {
            if (!touched[i]) Assert.That(yBig[i], Is.EqualTo(ModuleData.Sentinel), $"element {i} outside the output view");
        }
    }

    // ---- Failures change nothing. ----

    private sealed class KvState(KvCache<float> cache)
    {
        private readonly int[] _lengths = cache.Lengths.ToArray();
        private readonly float[] _keys = cache.KeyStorage.ToArray(), _values = cache.ValueStorage.ToArray();

        public void AssertUnchanged(KvCache<float> cache)
        {
            Assert.That(cache.Lengths.ToArray(), Is.EqualTo(_lengths), "cache lengths must be unchanged");
            Assert.That(cache.KeyStorage.SequenceEqual(_keys), Is.True, "cached keys must be unchanged");
            Assert.That(cache.ValueStorage.SequenceEqual(_values), Is.True, "cached values must be unchanged");
        }
    }

    private sealed class PagedState
    {
        private readonly Dictionary<int, (int Length, int[] Table)> _sequences = [];
        private readonly int _free;
        private readonly int[] _refCounts;
        private readonly float[] _keys, _values;

        public PagedState(PagedKvCache<float> cache)
        {
            foreach (int s in cache.Allocator.Sequences) _sequences[s] = (cache.Length(s), cache.Allocator.BlockTable(s).ToArray());
            _free = cache.Allocator.FreePages;
            _refCounts = Enumerable.Range(0, cache.Allocator.PageCount).Select(cache.Allocator.RefCount).ToArray();
            _keys = cache.KeyStorage.ToArray();
            _values = cache.ValueStorage.ToArray();
        }

        public void AssertUnchanged(PagedKvCache<float> cache)
        {
            Assert.That(cache.Allocator.Sequences, Is.EquivalentTo(_sequences.Keys), "live sequences");
            foreach (var (s, (length, table)) in _sequences)
            {
                Assert.That(cache.Length(s), Is.EqualTo(length), $"sequence {s} length must be unchanged");
                Assert.That(cache.Allocator.BlockTable(s).ToArray(), Is.EqualTo(table), $"sequence {s} block table must be unchanged");
            }
            Assert.That(cache.Allocator.FreePages, Is.EqualTo(_free), "free pages must be unchanged");
            Assert.That(Enumerable.Range(0, cache.Allocator.PageCount).Select(cache.Allocator.RefCount), Is.EqualTo(_refCounts), "reference counts");
            Assert.That(cache.KeyStorage.SequenceEqual(_keys), Is.True, "key pool must be unchanged");
            Assert.That(cache.ValueStorage.SequenceEqual(_values), Is.True, "value pool must be unchanged");
        }
    }

    [Test]
    public void KvCacheOverflowThrowsAndAppendsNothing()
    {
        var c = new AttentionConfig(32, 4, 2, causal: true);
        var m = ModuleData.Create(c, 31);
        int model = 32;
        var x = ModuleData.Input(2, 10, model, 32);
        var (full, _) = ModuleData.Run(m, x, 2, 10, null, 10);
        var cache = new KvCache<float>(2, 10, c.KvHeads, c.HeadDim);
        var stacked = ModuleData.Filled(2 * 10 * model, float.NaN);
        DecodeRows(m, cache, x, stacked, 2, 10, 0, 8);

        // 8 + 3 > 10: throws naming the cache and the numbers; nothing appended, output untouched.
        var state = new KvState(cache);
        var extra = ModuleData.Input(2, 3, model, 33);
        var y = ModuleData.Filled(2 * 3 * model, ModuleData.Sentinel);
        var ex = Assert.Throws<ArgumentException>(() => m.Forward(ModuleData.Act(extra, 2, 3, model), ModuleData.Act(y, 2, 3, model), cache))!;
        Assert.That(ex.ParamName, Is.EqualTo("cache"));
        Assert.That(ex.Message, Does.Contain("3").And.Contain("8").And.Contain("10"));
        state.AssertUnchanged(cache);
        ModuleData.AssertAll(y, ModuleData.Sentinel, "output must be untouched");

        // Filling exactly to capacity still works, and continues the original sequence.
        DecodeRows(m, cache, x, stacked, 2, 10, 8, 2);
        Assert.That(cache.Lengths.ToArray(), Is.EqualTo(new[] { 10, 10 }));
        AssertEqualsFull(stacked, full, "decode up to capacity after a refused append", [2, 10, model]);

        // One more token: refused again.
        state = new KvState(cache);
        var one = ModuleData.Filled(2 * model, ModuleData.Sentinel);
        Assert.Throws<ArgumentException>(() => m.Forward(ModuleData.Act(extra, 2, 1, model), ModuleData.Act(one, 2, 1, model), cache));
        state.AssertUnchanged(cache);
        ModuleData.AssertAll(one, ModuleData.Sentinel, "output must be untouched");
    }

    [Test]
    public void KvCacheOverflowOfOneSequenceAppendsToNone()
    {
        // Sequence 0 holds 8 of 10, sequence 1 holds 3 (trimmed): appending 3 overflows sequence 0 only,
        // and sequence 1 must not grow either.
        var c = new AttentionConfig(32, 4, 1, causal: true);
        var m = ModuleData.Create(c, 34);
        var cache = new KvCache<float>(2, 10, c.KvHeads, c.HeadDim);
        var x = ModuleData.Input(2, 8, 32, 35);
        m.Forward(ModuleData.Act(x, 2, 8, 32), ModuleData.Act(new float[x.Length], 2, 8, 32), cache);
        cache.Trim(1, 3);
        var state = new KvState(cache);
        var y = ModuleData.Filled(2 * 3 * 32, ModuleData.Sentinel);
        var ex = Assert.Throws<ArgumentException>(() => m.Forward(ModuleData.Act(ModuleData.Input(2, 3, 32, 36), 2, 3, 32), ModuleData.Act(y, 2, 3, 32), cache))!;
        Assert.That(ex.ParamName, Is.EqualTo("cache"));
        Assert.That(ex.Message, Does.Contain("sequence 0"));
        state.AssertUnchanged(cache);
        ModuleData.AssertAll(y, ModuleData.Sentinel, "output must be untouched");
    }

    [Test]
    public void PagedPoolExhaustionThrowsAndAppendsToNoSequence()
    {
        // Page size 4, 3 pages: A holds 4 tokens (1 full page), B holds 1 (1 page), 1 page free. Appending 4
        // tokens to [B, A] needs 1 page for B (which alone would fit) and 1 for A: 2 > 1, so it throws and
        // neither sequence changes.
        var c = new AttentionConfig(32, 4, 2, causal: true);
        var m = ModuleData.Create(c, 37);
        int model = 32;
        var cache = new PagedKvCache<float>(3, 4, c.KvHeads, c.HeadDim);
        int a = cache.CreateSequence(), b = cache.CreateSequence();
        var xa = ModuleData.Input(1, 4, model, 38);
        var xb = ModuleData.Input(1, 1, model, 39);
        var ya = new float[xa.Length];
        var yb = new float[xb.Length];
        m.Forward(ModuleData.Act(xa, 1, 4, model), ModuleData.Act(ya, 1, 4, model), cache, [a]);
        m.Forward(ModuleData.Act(xb, 1, 1, model), ModuleData.Act(yb, 1, 1, model), cache, [b]);
        Assert.That(cache.Allocator.FreePages, Is.EqualTo(1));

        var state = new PagedState(cache);
        var y = ModuleData.Filled(2 * 4 * model, ModuleData.Sentinel);
        var ex = Assert.Catch<ArgumentException>(
            () => m.Forward(ModuleData.Act(ModuleData.Input(2, 4, model, 40), 2, 4, model), ModuleData.Act(y, 2, 4, model), cache, [b, a]))!;
        Assert.That(ex.ParamName, Is.EqualTo("cache"));
        Assert.That(ex.Message, Does.Contain("2").And.Contain("1"));
        state.AssertUnchanged(cache);
        ModuleData.AssertAll(y, ModuleData.Sentinel, "output must be untouched");

        // A batch that fits (1 token each: B stays in its page, A takes the free page) still decodes
        // correctly, which also proves nothing of the refused call was appended.
        var next = ModuleData.Input(2, 1, model, 41);
        var yn = ModuleData.Filled(2 * model, float.NaN);
        m.Forward(ModuleData.Act(next, 2, 1, model), ModuleData.Act(yn, 2, 1, model), cache, [b, a]);
        Assert.That(cache.Allocator.FreePages, Is.EqualTo(0));
        var streamB = xb.Concat(next.AsSpan(0, model).ToArray()).ToArray();
        var streamA = xa.Concat(next.AsSpan(model, model).ToArray()).ToArray();
        var (fullB, _) = ModuleData.Run(m, streamB, 1, 2, null, 2);
        var (fullA, _) = ModuleData.Run(m, streamA, 1, 5, null, 5);
        AssertEqualsFull(yn.AsSpan(0, model).ToArray(), fullB.AsSpan(model, model).ToArray(), "B after the refused call", [1, 1, model]);
        AssertEqualsFull(yn.AsSpan(model, model).ToArray(), fullA.AsSpan(4 * model, model).ToArray(), "A after the refused call", [1, 1, model]);
    }

    [Test]
    public void PagedForkedBatchThatFitsIsNotRefused()
    {
        // A holds 6 tokens in pages of 4 (second page half full), F = fork(A) shares both pages, 1 page is
        // free. Appending 1 token to [A, F] fits: A copies the shared half page into the free page
        // (copy-on-write), after which F is the only holder of the original page and appends in place.
        // Appending through the cache directly, one sequence after the other, proves it. The module must
        // not refuse the batch as "pool exhausted" by counting a copy for F too.
        var c = new AttentionConfig(32, 4, 2, causal: true);
        int model = 32;
        PagedKvCache<float> Build(MultiHeadAttention module, out int a, out int f)
        {
            var cache = new PagedKvCache<float>(3, 4, c.KvHeads, c.HeadDim);
            a = cache.CreateSequence();
            module.Forward(ModuleData.Act(ModuleData.Input(1, 6, model, 42), 1, 6, model), ModuleData.Act(new float[6 * model], 1, 6, model), cache, [a]);
            f = cache.Fork(a);
            Assert.That(cache.Allocator.FreePages, Is.EqualTo(1));
            return cache;
        }

        var m = ModuleData.Create(c, 43);
        var direct = Build(m, out int da, out int df);
        var kv = new float[c.KvHeads * c.HeadDim];
        var token = Views.Strided(kv, [1, c.KvHeads, c.HeadDim], [kv.Length, c.HeadDim, 1]);
        direct.Append(da, token, token);
        direct.Append(df, token, token);
        Assert.That(direct.Allocator.FreePages, Is.EqualTo(0), "the batch fits the pool when appended sequence by sequence");

        var cacheM = Build(m, out int a, out int f);
        var y = ModuleData.Filled(2 * model, float.NaN);
        Assert.DoesNotThrow(() => m.Forward(ModuleData.Act(ModuleData.Input(2, 1, model, 44), 2, 1, model), ModuleData.Act(y, 2, 1, model), cacheM, [a, f]),
            "MultiHeadAttention.Forward(paged) refuses a batch of forked sequences that fits the pool");
        Assert.That(cacheM.Length(a), Is.EqualTo(7));
        Assert.That(cacheM.Length(f), Is.EqualTo(7));
        Tolerance.AssertNoNaN(y, "output", [2, 1, model]);
    }

    [Test]
    public void SparseConfigWithACacheThrows()
    {
        var c = new AttentionConfig(32, 4, 2, causal: true, sparse: SparsePattern.Local, blockSize: 4);
        var m = ModuleData.Create(c, 45);
        var x = ModuleData.Input(2, 3, 32, 46);
        var y = ModuleData.Filled(x.Length, ModuleData.Sentinel);
        var cache = new KvCache<float>(2, 8, c.KvHeads, c.HeadDim);
        var state = new KvState(cache);
        var ex = Assert.Throws<ArgumentException>(() => m.Forward(ModuleData.Act(x, 2, 3, 32), ModuleData.Act(y, 2, 3, 32), cache))!;
        Assert.That(ex.ParamName, Is.EqualTo("cache"));
        Assert.That(ex.Message, Does.Contain("Local"));
        state.AssertUnchanged(cache);
        ModuleData.AssertAll(y, ModuleData.Sentinel, "output must be untouched");

        var paged = new PagedKvCache<float>(8, 4, c.KvHeads, c.HeadDim);
        int[] seqs = [paged.CreateSequence(), paged.CreateSequence()];
        var pstate = new PagedState(paged);
        ex = Assert.Throws<ArgumentException>(() => m.Forward(ModuleData.Act(x, 2, 3, 32), ModuleData.Act(y, 2, 3, 32), paged, seqs))!;
        Assert.That(ex.ParamName, Is.EqualTo("cache"));
        pstate.AssertUnchanged(paged);
        ModuleData.AssertAll(y, ModuleData.Sentinel, "output must be untouched");

        foreach (var pattern in new[] { SparsePattern.Strided, SparsePattern.Random })
        {
            var mp = new MultiHeadAttention(new AttentionConfig(32, 4, 2, causal: true, sparse: pattern, blockSize: 4));
            Assert.Throws<ArgumentException>(() => mp.Forward(ModuleData.Act(x, 2, 3, 32), ModuleData.Act(y, 2, 3, 32), cache), pattern.ToString());
        }
        state.AssertUnchanged(cache);
    }

    [Test]
    public void HeadDimTheEngineRejectsFailsAtConstruction()
    {
        // D = 600 is a valid config but above CpuAttention.MaxHeadDim (512): the module refuses it when
        // built, so no forward (full, contiguous cache, paged cache) can start work and then fail.
        var c = new AttentionConfig(16, 1, headDim: CpuAttention.MaxHeadDim + 88, causal: true);
        var e = Assert.Throws<ArgumentException>(() => _ = new MultiHeadAttention(c));
        Assert.That(e!.ParamName, Is.EqualTo("config"));
        Assert.That(e.Message, Does.Contain("600").And.Contain("512"));
    }

    private static IEnumerable<TestCaseData> KvCacheShapeErrors()
    {
        // (cache batch, Hkv, D, input [B, n, model], output [B, n, model], expected parameter)
        yield return new TestCaseData(2, 1, 8, new[] { 2, 3, 32 }, new[] { 2, 3, 32 }, "cache").SetArgDisplayNames("cache Hkv 1, config 2");
        yield return new TestCaseData(2, 2, 4, new[] { 2, 3, 32 }, new[] { 2, 3, 32 }, "cache").SetArgDisplayNames("cache D 4, config 8");
        yield return new TestCaseData(3, 2, 8, new[] { 2, 3, 32 }, new[] { 2, 3, 32 }, "input").SetArgDisplayNames("cache batch 3, input 2");
        yield return new TestCaseData(2, 2, 8, new[] { 2, 3, 31 }, new[] { 2, 3, 32 }, "input").SetArgDisplayNames("input modelDim 31");
        yield return new TestCaseData(2, 2, 8, new[] { 2, 3, 32 }, new[] { 2, 4, 32 }, "output").SetArgDisplayNames("output n 4");
        yield return new TestCaseData(2, 2, 8, new[] { 2, 3, 32 }, new[] { 2, 3, 33 }, "output").SetArgDisplayNames("output modelDim 33");
        yield return new TestCaseData(2, 2, 8, new[] { 2, 3, 32 }, new[] { 1, 3, 32 }, "output").SetArgDisplayNames("output batch 1");
    }

    [TestCaseSource(nameof(KvCacheShapeErrors))]
    public void KvCacheShapeErrorsThrowAndChangeNothing(int cacheBatch, int hkv, int d, int[] inShape, int[] outShape, string param)
    {
        var m = ModuleData.Create(new AttentionConfig(32, 4, 2, causal: true), 47);
        var cache = new KvCache<float>(cacheBatch, 16, hkv, d);
        var state = new KvState(cache);
        var x = ModuleData.Input(inShape[0], inShape[1], inShape[2], 48);
        var y = ModuleData.Filled(outShape[0] * outShape[1] * outShape[2], ModuleData.Sentinel);
        var ex = Assert.Throws<ArgumentException>(() => m.Forward(ModuleData.Act(x, inShape[0], inShape[1], inShape[2]), ModuleData.Act(y, outShape[0], outShape[1], outShape[2]), cache))!;
        Assert.That(ex.ParamName, Is.EqualTo(param), ex.Message);
        state.AssertUnchanged(cache);
        ModuleData.AssertAll(y, ModuleData.Sentinel, "output must be untouched");
    }

    [Test]
    public void PagedArgumentErrorsThrowAndChangeNothing()
    {
        var c = new AttentionConfig(32, 4, 2, causal: true);
        var m = ModuleData.Create(c, 49);
        var cache = new PagedKvCache<float>(8, 4, c.KvHeads, c.HeadDim);
        int a = cache.CreateSequence(), b = cache.CreateSequence(), dead = cache.CreateSequence();
        cache.Free(dead);
        var x = ModuleData.Input(2, 3, 32, 50);
        m.Forward(ModuleData.Act(x, 2, 3, 32), ModuleData.Act(new float[x.Length], 2, 3, 32), cache, [a, b]);
        var state = new PagedState(cache);
        var y = ModuleData.Filled(x.Length, ModuleData.Sentinel);

        void Expect(string param, int[] sequences, PagedKvCache<float>? other = null, string why = "")
        {
            var ex = Assert.Catch<ArgumentException>(
                () => m.Forward(ModuleData.Act(x, 2, 3, 32), ModuleData.Act(y, 2, 3, 32), other ?? cache, sequences), why)!;
            Assert.That(ex.ParamName, Is.EqualTo(param), $"{why}: {ex.Message}");
            state.AssertUnchanged(cache);
            ModuleData.AssertAll(y, ModuleData.Sentinel, $"{why}: output must be untouched");
        }

        Expect("sequences", [a, dead], why: "dead sequence id");
        Expect("sequences", [a, 77], why: "unknown sequence id");
        Expect("sequences", [a, a], why: "duplicate sequence ids");
        Expect("input", [a], why: "one sequence for a batch of two");
        Expect("input", [a, b, b + 10], why: "three sequences for a batch of two");
        Expect("cache", [a, b], new PagedKvCache<float>(8, 4, 1, c.HeadDim), "cache Hkv 1");
        Expect("cache", [a, b], new PagedKvCache<float>(8, 4, c.KvHeads, 4), "cache D 4");
    }
}
