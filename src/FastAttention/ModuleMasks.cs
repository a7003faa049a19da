// The attention mask a multi-head module (CPU or GPU) passes to its attention calls, with the block-sparse layout
// built once per (Sq, Sk) and reused while the call shapes repeat.

namespace FastAttention;

/// <summary>Masks of one module's calls, from its <see cref="AttentionConfig"/>. Not thread-safe (like the modules).</summary>
internal sealed class ModuleMasks(AttentionConfig config)
{
    private (int Sq, int Sk, BlockSparseMask? Mask) _blockMask;

    /// <summary>Causal / window from the config, plus its block-sparse layout for <paramref name="sq"/> x <paramref name="sk"/> when sparse.</summary>
    public AttentionMask For(int sq, int sk)
    {
        var mask = new AttentionMask { Causal = config.Causal, WindowLeft = config.WindowLeft, WindowRight = config.WindowRight };
        if (config.Sparse == SparsePattern.None) return mask;
        if (_blockMask.Mask is null || _blockMask.Sq != sq || _blockMask.Sk != sk)
        {
            _blockMask = (sq, sk, config.BuildBlockMask(sq, sk));
        }
        return mask with { BlockMask = _blockMask.Mask };
    }
}
