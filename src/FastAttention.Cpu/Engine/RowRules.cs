// The per-row visible key range [Lo(i), Hi(i)] of one batch entry (causal, window, lengths).

namespace FastAttention.Cpu.Engine;

/// <summary>
/// Visibility of one batch entry, as documented on <see cref="AttentionMask"/>: query row <c>i</c>
/// sees keys <c>[Lo(i), Hi(i)]</c> (empty when Lo &gt; Hi), further filtered by a block layout.
/// Both bounds are non-decreasing in <c>i</c>.
/// </summary>
internal readonly struct RowRules
{
    public readonly int QueryLength;  // Lq: rows >= Lq are padding
    public readonly int KeyLength;    // Lk
    private readonly long _offset;    // Lk - Lq (bottom-right alignment)
    private readonly bool _causal;
    private readonly int _left, _right;

    public RowRules(AttentionMask mask, AttentionShape shape, int batch)
        : this(mask, mask.QueryLengths?[batch] ?? shape.QueryLength, mask.KeyLengths?[batch] ?? shape.KeyLength)
    {
    }

    /// <summary>Rules for explicit lengths (decode: Lk = tokens in the cache, Lq = new query tokens).</summary>
    public RowRules(AttentionMask mask, int queryLength, int keyLength)
    {
        QueryLength = queryLength;
        KeyLength = keyLength;
        _offset = (long)KeyLength - QueryLength;
        _causal = mask.Causal;
        _left = mask.WindowLeft;
        _right = mask.WindowRight;
    }

    /// <summary>First visible key of row <paramref name="i"/>, in [0, Lk].</summary>
    public int Lo(int i) => _left < 0 ? 0 : (int)Math.Clamp(i + _offset - _left, 0, KeyLength);

    /// <summary>Last visible key of row <paramref name="i"/>, in [-1, Lk - 1].</summary>
    public int Hi(int i)
    {
        long hi = KeyLength - 1;
        if (_causal) hi = Math.Min(hi, i + _offset);
        if (_right >= 0) hi = Math.Min(hi, i + _offset + _right);
        return (int)Math.Max(hi, -1);
    }
}
