// Configuration of a multi-head attention module, validated when it is built.

namespace FastAttention;

/// <summary>Built-in block-sparse patterns of a multi-head attention module.</summary>
public enum SparsePattern
{
    /// <summary>Dense attention.</summary>
    None,
    /// <summary><see cref="BlockSparseMask.Local"/>: a band of blocks around the diagonal.</summary>
    Local,
    /// <summary><see cref="BlockSparseMask.Strided"/>: the local band plus every stride-th block.</summary>
    Strided,
    /// <summary><see cref="BlockSparseMask.Random"/>: seeded random blocks plus the diagonal.</summary>
    Random,
}

/// <summary>
/// Shape and behaviour of a multi-head attention module: model width, query and key/value heads,
/// head size, causal masking, sliding window, block-sparse pattern, scale and projection biases.
/// Every argument is checked by the constructor.
/// </summary>
public sealed class AttentionConfig
{
    /// <summary>Creates and validates a configuration.</summary>
    /// <param name="modelDim">Width of the module's input and output (d_model).</param>
    /// <param name="heads">Query heads (H).</param>
    /// <param name="kvHeads">Key/value heads (Hkv, H % Hkv == 0); 0 = <paramref name="heads"/> (MHA). 1 = MQA.</param>
    /// <param name="headDim">Features per head (D); 0 = modelDim / heads (which must divide).</param>
    /// <param name="causal">Causal masking (bottom-right aligned).</param>
    /// <param name="windowLeft">Sliding window: keys visible before the diagonal; -1 = unbounded.</param>
    /// <param name="windowRight">Sliding window: keys visible after the diagonal; -1 = unbounded.</param>
    /// <param name="sparse">Block-sparse pattern.</param>
    /// <param name="blockSize">Block size of the sparse pattern (query and key).</param>
    /// <param name="localBlocks">Local pattern (and the local part of strided): blocks kept on each side of the diagonal.</param>
    /// <param name="stride">Strided pattern: every stride-th block is kept.</param>
    /// <param name="randomBlocks">Random pattern: random blocks kept per query block.</param>
    /// <param name="randomSeed">Random pattern: seed.</param>
    /// <param name="scale">Softmax scale; null = 1/sqrt(headDim).</param>
    /// <param name="bias">Whether the Q/K/V/O projections have biases.</param>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, a window is below -1, a pattern setting is out of range, or the scale is not finite.</exception>
    /// <exception cref="ArgumentException">heads is not a multiple of kvHeads, kvHeads exceeds heads, or modelDim is not divisible by heads when headDim is 0.</exception>
    public AttentionConfig(
        int modelDim, int heads, int kvHeads = 0, int headDim = 0, bool causal = false,
        int windowLeft = -1, int windowRight = -1,
        SparsePattern sparse = SparsePattern.None, int blockSize = 64, int localBlocks = 1, int stride = 4,
        int randomBlocks = 2, ulong randomSeed = 0, float? scale = null, bool bias = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(modelDim);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(heads);
        ArgumentOutOfRangeException.ThrowIfNegative(kvHeads);
        ArgumentOutOfRangeException.ThrowIfNegative(headDim);
        kvHeads = kvHeads == 0 ? heads : kvHeads;
        if (kvHeads > heads || heads % kvHeads != 0)
        {
            throw new ArgumentException($"heads = {heads} must be a multiple of kvHeads = {kvHeads} (and kvHeads <= heads).", nameof(kvHeads));
        }
        if (headDim == 0)
        {
            if (modelDim % heads != 0)
            {
                throw new ArgumentException($"modelDim = {modelDim} is not divisible by heads = {heads}; pass headDim explicitly.", nameof(headDim));
            }
            headDim = modelDim / heads;
        }
        if (windowLeft < -1) throw new ArgumentOutOfRangeException(nameof(windowLeft), windowLeft, "windowLeft must be -1 (unbounded) or >= 0.");
        if (windowRight < -1) throw new ArgumentOutOfRangeException(nameof(windowRight), windowRight, "windowRight must be -1 (unbounded) or >= 0.");
        if (!Enum.IsDefined(sparse)) throw new ArgumentOutOfRangeException(nameof(sparse), sparse, "Unknown sparse pattern.");
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSize);
        ArgumentOutOfRangeException.ThrowIfNegative(localBlocks);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(stride);
        ArgumentOutOfRangeException.ThrowIfNegative(randomBlocks);
        if (scale is { } s && !float.IsFinite(s)) throw new ArgumentOutOfRangeException(nameof(scale), s, "scale must be finite.");
        (ModelDim, Heads, KvHeads, HeadDim, Causal, WindowLeft, WindowRight) = (modelDim, heads, kvHeads, headDim, causal, windowLeft, windowRight);
        (Sparse, BlockSize, LocalBlocks, Stride, RandomBlocks, RandomSeed, Scale, Bias) = (sparse, blockSize, localBlocks, stride, randomBlocks, randomSeed, scale, bias);
    }

    /// <summary>Width of the module's input and output.</summary>
    public int ModelDim { get; }
    /// <summary>Query heads (H).</summary>
    public int Heads { get; }
    /// <summary>Key/value heads (Hkv).</summary>
    public int KvHeads { get; }
    /// <summary>Features per head (D).</summary>
    public int HeadDim { get; }
    /// <summary>Causal masking.</summary>
    public bool Causal { get; }
    /// <summary>Sliding window, keys before the diagonal (-1 = unbounded).</summary>
    public int WindowLeft { get; }
    /// <summary>Sliding window, keys after the diagonal (-1 = unbounded).</summary>
    public int WindowRight { get; }
    /// <summary>Block-sparse pattern.</summary>
    public SparsePattern Sparse { get; }
    /// <summary>Block size of the sparse pattern.</summary>
    public int BlockSize { get; }
    /// <summary>Blocks kept on each side of the diagonal by the local and strided patterns.</summary>
    public int LocalBlocks { get; }
    /// <summary>Stride of the strided pattern.</summary>
    public int Stride { get; }
    /// <summary>Random blocks per query block of the random pattern.</summary>
    public int RandomBlocks { get; }
    /// <summary>Seed of the random pattern.</summary>
    public ulong RandomSeed { get; }
    /// <summary>Softmax scale; null = 1/sqrt(HeadDim).</summary>
    public float? Scale { get; }
    /// <summary>Whether the projections have biases.</summary>
    public bool Bias { get; }

    /// <summary>The block-sparse layout for a call with <paramref name="seqQ"/> queries and <paramref name="seqK"/> keys; null when dense.</summary>
    public BlockSparseMask? BuildBlockMask(int seqQ, int seqK) => Sparse switch
    {
        SparsePattern.None => null,
        SparsePattern.Local => BlockSparseMask.Local(seqQ, seqK, BlockSize, BlockSize, LocalBlocks, LocalBlocks),
        SparsePattern.Strided => BlockSparseMask.Strided(seqQ, seqK, BlockSize, BlockSize, LocalBlocks, LocalBlocks, Stride),
        SparsePattern.Random => BlockSparseMask.Random(seqQ, seqK, BlockSize, BlockSize, RandomBlocks, RandomSeed, Heads),
        _ => throw new InvalidOperationException($"Unknown sparse pattern {Sparse}."),
    };
}
