// Shared pieces of the cache tests: per-sequence token histories (the ground truth a cache must hold),
// strided token inputs, NaN poisoning of every slot no live sequence uses, read-back of cache contents,
// snapshots of allocator state, and the decode-vs-double-reference check.

using FastAttention.Caching;
using FastAttention.Cpu.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Caching;

/// <summary>The tokens a sequence should hold: keys and values <c>[L, Hkv, D]</c>, flat.</summary>
internal sealed class TokenHistory<T>(int kvHeads, int headDim) where T : unmanaged
{
    private readonly List<T> _keys = [], _values = [];

    public int KvHeads => kvHeads;
    public int HeadDim => headDim;
    public int TokenSize => kvHeads * headDim;
    public int Length => _keys.Count / TokenSize;
    public T[] Keys => [.. _keys];
    public T[] Values => [.. _values];

    /// <summary>Appends <c>[n, Hkv, D]</c> keys and values (row-major).</summary>
    public void Add(T[] keys, T[] values)
    {
        _keys.AddRange(keys);
        _values.AddRange(values);
    }

    public void Trim(int length)
    {
        _keys.RemoveRange(length * TokenSize, _keys.Count - length * TokenSize);
        _values.RemoveRange(length * TokenSize, _values.Count - length * TokenSize);
    }

    public TokenHistory<T> Clone()
    {
        var c = new TokenHistory<T>(kvHeads, headDim);
        c.Add(Keys, Values);
        return c;
    }

    /// <summary>Tokens <c>[start, start + n)</c> of keys or values, <c>[n, Hkv, D]</c>.</summary>
    public T[] Slice(bool keys, int start, int n) =>
        (keys ? _keys : _values).GetRange(start * TokenSize, n * TokenSize).ToArray();
}

internal static class CacheTestSupport
{
    /// <summary>Names of the input layouts <see cref="TokensView{T}"/> builds.</summary>
    public static readonly string[] LayoutNames = ["contiguous", "head-major", "padded stride-2", "D-outermost"];

    /// <summary>
    /// A view of <paramref name="logical"/> (row-major <c>[n, Hkv, D]</c> or <c>[B, n, Hkv, D]</c>) in one
    /// of four memory layouts: 0 contiguous; 1 head-major (<c>[Hkv, n, D]</c> memory, as BHSD); 2 every axis
    /// padded and D with stride 2; 3 D outermost. Gaps hold NaN, so copying one of them shows up.
    /// </summary>
    public static TensorSpan<T> TokensView<T>(T[] logical, int[] lengths, int layout, out T[] storage) where T : unmanaged
    {
        int rank = lengths.Length;
        int[] identity = [.. Enumerable.Range(0, rank)];
        int[] order = layout switch
        {
            1 when rank == 3 => [1, 0, 2],
            1 => [0, 2, 1, 3],
            3 when rank == 3 => [2, 0, 1],
            3 => [3, 0, 1, 2],
            _ => identity,
        };
        int step = layout == 2 ? 2 : 1, pad = layout == 2 ? 3 : layout == 3 ? 1 : 0;
        return Views.Scattered(logical, lengths, order, step, pad, Num.FromFloat<T>(float.NaN), out storage);
    }

    /// <summary>Fills every key/value slot at or past each sequence's length with NaN.</summary>
    public static void PoisonUnused<T>(KvCache<T> cache) where T : unmanaged
    {
        T nan = Num.FromFloat<T>(float.NaN);
        int s = cache.MaxSequenceLength, d = cache.HeadDim;
        for (int b = 0; b < cache.Batch; b++)
        {
            for (int h = 0; h < cache.KvHeads; h++)
            {
                int row0 = (b * cache.KvHeads + h) * s;
                int from = (row0 + cache.Lengths[b]) * d, to = (row0 + s) * d;
                cache.KeyStorage[from..to].Fill(nan);
                cache.ValueStorage[from..to].Fill(nan);
            }
        }
    }

    /// <summary>Slots of each page that some live sequence uses (a prefix of the page).</summary>
    public static int[] UsedSlots(PageAllocator a)
    {
        var used = new int[a.PageCount];
        foreach (int seq in a.Sequences)
        {
            int length = a.Length(seq);
            var table = a.BlockTable(seq);
            for (int p = 0; p < table.Length; p++)
            {
                used[table[p]] = Math.Max(used[table[p]], Math.Min(a.PageSize, length - p * a.PageSize));
            }
        }
        return used;
    }

    /// <summary>Fills every slot of the pool that no live sequence uses (free pages, tails of pages) with NaN.</summary>
    public static void PoisonUnused<T>(PagedKvCache<T> cache) where T : unmanaged
    {
        T nan = Num.FromFloat<T>(float.NaN);
        int ps = cache.PageSize, d = cache.HeadDim, hkv = cache.KvHeads;
        var used = UsedSlots(cache.Allocator);
        for (int page = 0; page < used.Length; page++)
        {
            for (int h = 0; h < hkv; h++)
            {
                int row0 = (h * used.Length + page) * ps;   // pool [Hkv, pageCount, pageSize, D]
                int from = (row0 + used[page]) * d, to = (row0 + ps) * d;
                cache.KeyStorage[from..to].Fill(nan);
                cache.ValueStorage[from..to].Fill(nan);
            }
        }
    }

    /// <summary>Reads a paged sequence back from the pool (<c>[Hkv, pageCount, pageSize, D]</c>) through its block table, <c>[L, Hkv, D]</c>.</summary>
    public static (T[] Keys, T[] Values) ReadBack<T>(PagedKvCache<T> cache, int sequence) where T : unmanaged
    {
        int length = cache.Length(sequence), ps = cache.PageSize, d = cache.HeadDim, hkv = cache.KvHeads;
        var table = cache.Allocator.BlockTable(sequence);
        Assert.That(table.Length, Is.EqualTo((length + ps - 1) / ps), $"sequence {sequence}: pages for length {length}");
        var k = new T[length * hkv * d];
        var v = new T[length * hkv * d];
        for (int p = 0; p < length; p++)
        {
            for (int h = 0; h < hkv; h++)
            {
                int from = ((h * cache.Allocator.PageCount + table[p / ps]) * ps + p % ps) * d, to = (p * hkv + h) * d;
                cache.KeyStorage.Slice(from, d).CopyTo(k.AsSpan(to, d));
                cache.ValueStorage.Slice(from, d).CopyTo(v.AsSpan(to, d));
            }
        }
        return (k, v);
    }

    /// <summary>Reads sequence <paramref name="b"/> of a contiguous cache back through its public <see cref="KvCache{T}.Keys"/>/<see cref="KvCache{T}.Values"/> views.</summary>
    public static (T[] Keys, T[] Values) ReadBack<T>(KvCache<T> cache, int b) where T : unmanaged
    {
        int length = cache.Lengths[b], d = cache.HeadDim, hkv = cache.KvHeads;
        var keys = cache.Keys;
        var values = cache.Values;
        var k = new T[length * hkv * d];
        var v = new T[length * hkv * d];
        for (int p = 0; p < length; p++)
            for (int h = 0; h < hkv; h++)
                for (int x = 0; x < d; x++)
                {
                    k[(p * hkv + h) * d + x] = keys[[b, p, h, x]];
                    v[(p * hkv + h) * d + x] = values[[b, p, h, x]];
                }
        return (k, v);
    }

    /// <summary>Bitwise equality of element arrays (NaN equals the same NaN), with the first difference in the message.</summary>
    public static void AssertSameBits<T>(ReadOnlySpan<T> actual, ReadOnlySpan<T> expected, string what) where T : unmanaged
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), $"{what}: length");
        var a = System.Runtime.InteropServices.MemoryMarshal.AsBytes(actual);
        var e = System.Runtime.InteropServices.MemoryMarshal.AsBytes(expected);
        if (!a.SequenceEqual(e))
        {
            int size = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
            int first = 0;
            while (a[first] == e[first]) first++;
            int i = first / size;
            Assert.Fail($"{what}: first difference at element {i}: {Num.ToFloat(actual[i])} vs {Num.ToFloat(expected[i])}.");
        }
    }

    /// <summary>Everything observable about an allocator: pool, free count, refcounts, every live table and length.</summary>
    public static string Snapshot(PageAllocator a)
    {
        var sb = new System.Text.StringBuilder();
        sb.Append($"pool {a.PageCount}x{a.PageSize}, free {a.FreePages}; refs [");
        for (int p = 0; p < a.PageCount; p++) sb.Append(p == 0 ? "" : ",").Append(a.RefCount(p));
        sb.Append(']');
        foreach (int seq in a.Sequences.Order())
        {
            sb.Append($"; seq {seq} len {a.Length(seq)} [{string.Join(",", a.BlockTable(seq).ToArray())}]");
        }
        return sb.ToString();
    }

    /// <summary>
    /// Checks decode results (output <c>[B, q, H, D]</c>, LSE <c>[B, H, q]</c>) against the double
    /// reference computed from the token histories: KeyLengths = history lengths, query rows bottom-right
    /// aligned. Output by the element type's policy, LSE by the fp32 policy.
    /// </summary>
    public static void AssertMatchesReference<T>(float[] output, float[]? lse, T[] query, IReadOnlyList<TokenHistory<T>> sequences,
        int q, int heads, AttentionOptions options, string label) where T : unmanaged =>
        AssertMatchesReference([(label, output, lse)], query, sequences, q, heads, options);

    /// <summary>As above for several results of the same decode (e.g. contiguous and paged), with the reference computed once.</summary>
    public static void AssertMatchesReference<T>((string Label, float[] Output, float[]? Lse)[] results, T[] query, IReadOnlyList<TokenHistory<T>> sequences,
        int q, int heads, AttentionOptions options) where T : unmanaged
    {
        int batch = sequences.Count, hkv = sequences[0].KvHeads, d = sequences[0].HeadDim;
        var lengths = sequences.Select(s => s.Length).ToArray();
        int sk = Math.Max(1, lengths.Max());
        var k = new float[batch * sk * hkv * d];
        var v = new float[batch * sk * hkv * d];
        for (int b = 0; b < batch; b++)
        {
            Num.ToFloats<T>(sequences[b].Keys).CopyTo(k, b * sk * hkv * d);
            Num.ToFloats<T>(sequences[b].Values).CopyTo(v, b * sk * hkv * d);
        }
        var shape = new AttentionShape(batch, q, sk, heads, hkv, d);
        var mask = options.Mask with { KeyLengths = lengths };
        var qf = Num.ToFloats<T>(query);
        float scale = options.ResolveScale(d);
        var expected = ReferenceAttention.Forward(qf, k, v, shape, scale, mask, wantProbabilities: false);
        int[] outDims = [batch, q, heads, d], lseDims = [batch, heads, q];
        string lens = $"lengths [{string.Join(",", lengths)}]";
        var naive = Num.IsHalfPrecision<T>() ? ReferenceAttention.NaiveForward<T>(qf, k, v, shape, scale, mask) : null;
        foreach (var (label, output, lse) in results)
        {
            if (naive is not null)
            {
                Tolerance.AssertWithinNaive(output, expected.Output, naive, $"{label} output ({Num.Name<T>()}, {lens})", outDims);
            }
            else
            {
                Tolerance.AssertClose(output, expected.Output, $"{label} output (fp32, {lens})", outDims);
            }
            if (lse is not null) Tolerance.AssertClose(lse, expected.LogSumExp, $"{label} logSumExp ({lens})", lseDims);
        }
    }

    /// <summary>Runs decode over a contiguous cache into NaN-filled destinations; returns output and LSE as floats.</summary>
    public static (float[] Output, float[] Lse) Decode<T>(KvCache<T> cache, T[] query, int q, int heads, AttentionOptions options) where T : unmanaged
    {
        int b = cache.Batch, d = cache.HeadDim;
        var o = Num.Filled<T>(b * q * heads * d, float.NaN);
        var lse = Num.Filled<float>(b * heads * q, float.NaN);
        CpuAttention.Decode<T>(Views.Bshd(query, b, q, heads, d), cache, Views.Bshd(o, b, q, heads, d), options, Views.Bhs(lse, b, heads, q));
        return (Num.ToFloats<T>(o), lse);
    }

    /// <summary>Runs decode over a paged cache into NaN-filled destinations; returns output and LSE as floats.</summary>
    public static (float[] Output, float[] Lse) Decode<T>(PagedKvCache<T> cache, int[] sequences, T[] query, int q, int heads, AttentionOptions options) where T : unmanaged
    {
        int b = sequences.Length, d = cache.HeadDim;
        var o = Num.Filled<T>(b * q * heads * d, float.NaN);
        var lse = Num.Filled<float>(b * heads * q, float.NaN);
        CpuAttention.Decode<T>(Views.Bshd(query, b, q, heads, d), cache, sequences, Views.Bshd(o, b, q, heads, d), options, Views.Bhs(lse, b, heads, q));
        return (Num.ToFloats<T>(o), lse);
    }
}
