// Block-sparse attention layouts: [heads or 1, query blocks, key blocks] keep/skip flags and builders.

namespace FastAttention;

/// <summary>
/// A block-sparse layout of shape <c>[Heads, QueryBlocks, KeyBlocks]</c> (Heads is 1 for a layout
/// shared by all heads, or H). Query row <c>i</c> and key <c>j</c> fall in blocks
/// <c>i / BlockSizeQ</c> and <c>j / BlockSizeK</c>; the last block of each axis may be partial, so
/// <c>QueryBlocks = ceil(Sq / BlockSizeQ)</c> and <c>KeyBlocks = ceil(Sk / BlockSizeK)</c>.
/// Skipped blocks cost no work in the engines.
/// </summary>
/// <remarks>
/// Built-in patterns place each query block's "diagonal" key block bottom-right aligned:
/// <c>diag(qb) = floor((min((qb + 1) * BlockSizeQ, Sq) - 1 + Sk - Sq) / BlockSizeK)</c>.
/// </remarks>
public sealed class BlockSparseMask
{
    private readonly bool[] _keep;

    /// <summary>Creates a custom layout from flags laid out <c>[heads, queryBlocks, keyBlocks]</c> row-major.</summary>
    /// <param name="keep">Flags, <c>heads * queryBlocks * keyBlocks</c> of them; copied.</param>
    /// <param name="heads">1 (shared by all heads) or the number of query heads.</param>
    /// <param name="queryBlocks">Blocks along the query axis.</param>
    /// <param name="keyBlocks">Blocks along the key axis.</param>
    /// <param name="blockSizeQ">Query rows per block.</param>
    /// <param name="blockSizeK">Keys per block.</param>
    /// <exception cref="ArgumentOutOfRangeException">A count or block size is not positive.</exception>
    /// <exception cref="ArgumentException"><paramref name="keep"/> does not have <c>heads * queryBlocks * keyBlocks</c> entries.</exception>
    public BlockSparseMask(ReadOnlySpan<bool> keep, int heads, int queryBlocks, int keyBlocks, int blockSizeQ, int blockSizeK)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(heads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(queryBlocks);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(keyBlocks);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSizeQ);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSizeK);
        long expected = (long)heads * queryBlocks * keyBlocks;
        if (keep.Length != expected)
        {
            throw new ArgumentException(
                $"Expected {heads} x {queryBlocks} x {keyBlocks} = {expected} flags, got {keep.Length}.", nameof(keep));
        }
        _keep = keep.ToArray();
        Heads = heads;
        QueryBlocks = queryBlocks;
        KeyBlocks = keyBlocks;
        BlockSizeQ = blockSizeQ;
        BlockSizeK = blockSizeK;
    }

    private BlockSparseMask(bool[] keep, int heads, int queryBlocks, int keyBlocks, int blockSizeQ, int blockSizeK)
    {
        _keep = keep;
        Heads = heads;
        QueryBlocks = queryBlocks;
        KeyBlocks = keyBlocks;
        BlockSizeQ = blockSizeQ;
        BlockSizeK = blockSizeK;
    }

    /// <summary>1 (shared by all heads) or the number of query heads.</summary>
    public int Heads { get; }
    /// <summary>Blocks along the query axis.</summary>
    public int QueryBlocks { get; }
    /// <summary>Blocks along the key axis.</summary>
    public int KeyBlocks { get; }
    /// <summary>Query rows per block.</summary>
    public int BlockSizeQ { get; }
    /// <summary>Keys per block.</summary>
    public int BlockSizeK { get; }

    /// <summary>Fraction of kept blocks, in [0, 1].</summary>
    public double Density => _keep.Count(k => k) / (double)_keep.Length;

    /// <summary>Whether query block <paramref name="queryBlock"/> of head <paramref name="head"/> attends to key block <paramref name="keyBlock"/>.</summary>
    /// <param name="head">Query head; ignored when <see cref="Heads"/> is 1.</param>
    /// <param name="queryBlock">Query block index.</param>
    /// <param name="keyBlock">Key block index.</param>
    /// <exception cref="IndexOutOfRangeException">An index is outside the layout.</exception>
    public bool IsKept(int head, int queryBlock, int keyBlock)
    {
        if ((uint)queryBlock >= (uint)QueryBlocks || (uint)keyBlock >= (uint)KeyBlocks || (Heads > 1 && (uint)head >= (uint)Heads))
        {
            throw new IndexOutOfRangeException(
                $"Block ({head}, {queryBlock}, {keyBlock}) is outside the layout [{Heads}, {QueryBlocks}, {KeyBlocks}].");
        }
        return _keep[Index(head, queryBlock, keyBlock)];
    }

    /// <summary>The flags of one query block of one head, <c>[KeyBlocks]</c>.</summary>
    internal ReadOnlySpan<bool> Row(int head, int queryBlock) =>
        _keep.AsSpan(Index(head, queryBlock, 0), KeyBlocks);

    private int Index(int head, int queryBlock, int keyBlock) =>
        ((Heads == 1 ? 0 : head) * QueryBlocks + queryBlock) * KeyBlocks + keyBlock;

    /// <summary>A copy of the flags, <c>[Heads, QueryBlocks, KeyBlocks]</c>.</summary>
    public bool[,,] ToArray()
    {
        var result = new bool[Heads, QueryBlocks, KeyBlocks];
        for (int h = 0; h < Heads; h++)
            for (int q = 0; q < QueryBlocks; q++)
                for (int k = 0; k < KeyBlocks; k++)
                    result[h, q, k] = _keep[Index(h, q, k)];
        return result;
    }

    /// <summary>A custom layout from a <c>[heads, queryBlocks, keyBlocks]</c> array.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="keep"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension (named heads, queryBlocks or keyBlocks) or block size is not positive.</exception>
    public static BlockSparseMask FromArray(bool[,,] keep, int blockSizeQ, int blockSizeK)
    {
        ArgumentNullException.ThrowIfNull(keep);
        int h = keep.GetLength(0), q = keep.GetLength(1), k = keep.GetLength(2);
        var flat = new bool[h * q * k];
        int n = 0;
        foreach (bool flag in keep)
        {
            flat[n++] = flag;
        }
        return new BlockSparseMask((ReadOnlySpan<bool>)flat, h, q, k, blockSizeQ, blockSizeK);
    }

    /// <summary>Every block kept (equivalent to dense attention).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A length or block size is not positive.</exception>
    public static BlockSparseMask Dense(int seqQ, int seqK, int blockSizeQ, int blockSizeK, int heads = 1) =>
        Build(seqQ, seqK, blockSizeQ, blockSizeK, heads, (_, _, _, _) => true);

    /// <summary>
    /// Local pattern: query block <c>qb</c> keeps key blocks <c>[diag(qb) - leftBlocks, diag(qb) + rightBlocks]</c>.
    /// With block sizes of 1 this equals a sliding window <c>(leftBlocks, rightBlocks)</c>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A length or block size is not positive, or a window is negative.</exception>
    public static BlockSparseMask Local(int seqQ, int seqK, int blockSizeQ, int blockSizeK, int leftBlocks, int rightBlocks, int heads = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(leftBlocks);
        ArgumentOutOfRangeException.ThrowIfNegative(rightBlocks);
        return Build(seqQ, seqK, blockSizeQ, blockSizeK, heads,
            (_, _, kb, diag) => kb >= diag - leftBlocks && kb <= diag + rightBlocks);
    }

    /// <summary>
    /// Strided pattern (Sparse Transformer): the local pattern plus every key block whose distance to
    /// the diagonal block is a multiple of <paramref name="stride"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A length, block size or stride is not positive, or a window is negative.</exception>
    public static BlockSparseMask Strided(int seqQ, int seqK, int blockSizeQ, int blockSizeK, int leftBlocks, int rightBlocks, int stride, int heads = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(leftBlocks);
        ArgumentOutOfRangeException.ThrowIfNegative(rightBlocks);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(stride);
        return Build(seqQ, seqK, blockSizeQ, blockSizeK, heads,
            (_, _, kb, diag) => (kb >= diag - leftBlocks && kb <= diag + rightBlocks) || (((diag - kb) % stride) + stride) % stride == 0);
    }

    /// <summary>
    /// Random pattern (BigBird-style): each query block keeps <paramref name="blocksPerRow"/> distinct
    /// random key blocks (all of them when fewer exist) plus its diagonal block. Reproducible from
    /// <paramref name="seed"/> on every platform (SplitMix64); each head draws its own blocks.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A length or block size is not positive, or <paramref name="blocksPerRow"/> is negative.</exception>
    public static BlockSparseMask Random(int seqQ, int seqK, int blockSizeQ, int blockSizeK, int blocksPerRow, ulong seed, int heads = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(blocksPerRow);
        CheckGeometry(seqQ, seqK, blockSizeQ, blockSizeK, heads);
        int qBlocks = CeilDiv(seqQ, blockSizeQ), kBlocks = CeilDiv(seqK, blockSizeK);
        var keep = new bool[heads * qBlocks * kBlocks];
        var order = new int[kBlocks];
        var rng = new SplitMix64(seed);
        for (int h = 0; h < heads; h++)
        {
            for (int qb = 0; qb < qBlocks; qb++)
            {
                var row = keep.AsSpan((h * qBlocks + qb) * kBlocks, kBlocks);
                for (int i = 0; i < kBlocks; i++) order[i] = i;
                int take = Math.Min(blocksPerRow, kBlocks);
                for (int i = 0; i < take; i++)
                {
                    int pick = i + (int)rng.NextBelow((ulong)(kBlocks - i));
                    (order[i], order[pick]) = (order[pick], order[i]);
                    row[order[i]] = true;
                }
                int diag = Diagonal(qb, seqQ, seqK, blockSizeQ, blockSizeK);
                if (diag >= 0 && diag < kBlocks) row[diag] = true;
            }
        }
        return new BlockSparseMask(keep, heads, qBlocks, kBlocks, blockSizeQ, blockSizeK);
    }

    /// <summary>The bottom-right aligned diagonal key block of query block <paramref name="queryBlock"/>.</summary>
    internal static int Diagonal(int queryBlock, int seqQ, int seqK, int blockSizeQ, int blockSizeK)
    {
        long lastRow = Math.Min((long)(queryBlock + 1) * blockSizeQ, seqQ) - 1;
        return (int)Math.Floor((lastRow + seqK - seqQ) / (double)blockSizeK);
    }

    private static BlockSparseMask Build(int seqQ, int seqK, int blockSizeQ, int blockSizeK, int heads, Func<int, int, int, int, bool> rule)
    {
        CheckGeometry(seqQ, seqK, blockSizeQ, blockSizeK, heads);
        int qBlocks = CeilDiv(seqQ, blockSizeQ), kBlocks = CeilDiv(seqK, blockSizeK);
        var keep = new bool[heads * qBlocks * kBlocks];
        for (int h = 0; h < heads; h++)
            for (int qb = 0; qb < qBlocks; qb++)
            {
                int diag = Diagonal(qb, seqQ, seqK, blockSizeQ, blockSizeK);
                for (int kb = 0; kb < kBlocks; kb++)
                    keep[(h * qBlocks + qb) * kBlocks + kb] = rule(h, qb, kb, diag);
            }
        return new BlockSparseMask(keep, heads, qBlocks, kBlocks, blockSizeQ, blockSizeK);
    }

    private static void CheckGeometry(int seqQ, int seqK, int blockSizeQ, int blockSizeK, int heads)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(seqQ);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(seqK);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSizeQ);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSizeK);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(heads);
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;

    /// <summary>SplitMix64: a tiny, well-mixed generator with a fixed, documented sequence.</summary>
    private struct SplitMix64(ulong state)
    {
        private ulong _state = state;

        public ulong Next()
        {
            ulong z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        /// <summary>Uniform in [0, bound) by rejection (no modulo bias).</summary>
        public ulong NextBelow(ulong bound)
        {
            ulong limit = ulong.MaxValue - ulong.MaxValue % bound;
            ulong x;
            do { x = Next(); } while (x >= limit);
            return x % bound;
        }
    }
}
