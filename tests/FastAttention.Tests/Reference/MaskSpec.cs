// A small text notation for masks so test cases read well in test names:
//   none | causal | win(l,r) | klen | klen0 | qlen | qlen0 | local(bq,bk,l,r) | strided(bq,bk,l,r,s)
//   | random(bq,bk,n) | randomh(bq,bk,n) | custom(bq,bk) | dense(bq,bk), joined with '+'.
// klen/qlen draw per-sequence lengths in [1, S] (klen0/qlen0 force the first sequence to 0);
// randomh and custom build per-head layouts (Heads = H).
using System.Globalization;

namespace FastAttention.Tests.Reference;

internal static class MaskSpec
{
    public static AttentionMask Build(string spec, AttentionShape s, ulong seed)
    {
        var rng = new Rng(seed ^ 0xA5A5_5A5AUL);
        var mask = AttentionMask.None;
        foreach (string raw in spec.Split('+', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string name = raw;
            int[] a = [];
            int open = raw.IndexOf('(');
            if (open >= 0)
            {
                name = raw[..open];
                a = raw[(open + 1)..^1].Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();
            }
            mask = name switch
            {
                "none" => mask,
                "causal" => mask with { Causal = true },
                "win" => mask with { WindowLeft = a[0], WindowRight = a[1] },
                "klen" => mask with { KeyLengths = Lengths(rng, s.Batch, s.KeyLength, false) },
                "klen0" => mask with { KeyLengths = Lengths(rng, s.Batch, s.KeyLength, true) },
                "qlen" => mask with { QueryLengths = Lengths(rng, s.Batch, s.QueryLength, false) },
                "qlen0" => mask with { QueryLengths = Lengths(rng, s.Batch, s.QueryLength, true) },
                "local" => mask with { BlockMask = BlockSparseMask.Local(s.QueryLength, s.KeyLength, a[0], a[1], a[2], a[3]) },
                "strided" => mask with { BlockMask = BlockSparseMask.Strided(s.QueryLength, s.KeyLength, a[0], a[1], a[2], a[3], a[4]) },
                "random" => mask with { BlockMask = BlockSparseMask.Random(s.QueryLength, s.KeyLength, a[0], a[1], a[2], seed) },
                "randomh" => mask with { BlockMask = BlockSparseMask.Random(s.QueryLength, s.KeyLength, a[0], a[1], a[2], seed, s.Heads) },
                "dense" => mask with { BlockMask = BlockSparseMask.Dense(s.QueryLength, s.KeyLength, a[0], a[1]) },
                "custom" => mask with { BlockMask = Custom(rng, s.Heads, s.QueryLength, s.KeyLength, a[0], a[1]) },
                _ => throw new ArgumentException($"Unknown mask term '{raw}' in '{spec}'.", nameof(spec)),
            };
        }
        return mask;
    }

    /// <summary>Per-head random flags, about 60% kept, built through the public constructor.</summary>
    public static BlockSparseMask Custom(Rng rng, int heads, int sq, int sk, int bq, int bk)
    {
        int qb = (sq + bq - 1) / bq, kb = (sk + bk - 1) / bk;
        var keep = new bool[heads * qb * kb];
        for (int i = 0; i < keep.Length; i++) keep[i] = rng.NextBool(0.6);
        return new BlockSparseMask(keep, heads, qb, kb, bq, bk);
    }

    private static int[] Lengths(Rng rng, int batch, int max, bool firstZero)
    {
        var r = new int[batch];
        for (int b = 0; b < batch; b++) r[b] = rng.Next(1, max);
        if (batch > 1) r[^1] = max; // keep one full-length sequence
        if (firstZero) r[0] = 0;
        return r;
    }
}
