// Which keys each query may attend to: causal, sliding window, per-sequence lengths, block-sparse layout.

namespace FastAttention;

/// <summary>
/// The visibility rules of one attention call. All rules are combined with AND. For batch entry
/// <c>b</c> with query length <c>Lq</c> (from <see cref="QueryLengths"/>, else Sq) and key length
/// <c>Lk</c> (from <see cref="KeyLengths"/>, else Sk), let <c>off = Lk - Lq</c> (bottom-right alignment,
/// as FlashAttention-2). Query row <c>i &lt; Lq</c> of head <c>h</c> sees key <c>j</c> when
/// <list type="bullet">
/// <item><c>j &lt; Lk</c>;</item>
/// <item>if <see cref="Causal"/>: <c>j &lt;= i + off</c>;</item>
/// <item>if <see cref="WindowLeft"/> &gt;= 0: <c>j &gt;= i + off - WindowLeft</c>;</item>
/// <item>if <see cref="WindowRight"/> &gt;= 0: <c>j &lt;= i + off + WindowRight</c>;</item>
/// <item>if <see cref="BlockMask"/> is set: <c>BlockMask.IsKept(h, i / BlockSizeQ, j / BlockSizeK)</c>.</item>
/// </list>
/// Rows <c>i &gt;= Lq</c> and rows that see no key produce zeros and a log-sum-exp of negative infinity.
/// </summary>
public sealed record AttentionMask
{
    private readonly int _windowLeft = -1;
    private readonly int _windowRight = -1;

    /// <summary>No masking: every query sees every key.</summary>
    public static AttentionMask None { get; } = new();

    /// <summary>Causal masking, bottom-right aligned.</summary>
    public static AttentionMask CausalMask { get; } = new() { Causal = true };

    /// <summary>Causal masking (bottom-right aligned when Sq != Sk).</summary>
    public bool Causal { get; init; }

    /// <summary>Keys visible to the left of the aligned diagonal; -1 = unbounded.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is less than -1.</exception>
    public int WindowLeft
    {
        get => _windowLeft;
        init => _windowLeft = CheckWindow(value, nameof(WindowLeft));
    }

    /// <summary>Keys visible to the right of the aligned diagonal; -1 = unbounded.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is less than -1.</exception>
    public int WindowRight
    {
        get => _windowRight;
        init => _windowRight = CheckWindow(value, nameof(WindowRight));
    }

    /// <summary>Per-sequence valid key lengths, <c>[B]</c>, each in <c>[0, Sk]</c>; null = all Sk.</summary>
    public int[]? KeyLengths { get; init; }

    /// <summary>Per-sequence valid query lengths, <c>[B]</c>, each in <c>[0, Sq]</c>; null = all Sq.</summary>
    public int[]? QueryLengths { get; init; }

    /// <summary>Block-sparse layout; null = dense.</summary>
    public BlockSparseMask? BlockMask { get; init; }

    /// <summary>A sliding window of <paramref name="left"/> keys before and <paramref name="right"/> after the diagonal.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A bound is less than -1.</exception>
    public static AttentionMask SlidingWindow(int left, int right, bool causal = false) =>
        new() { WindowLeft = left, WindowRight = right, Causal = causal };

    /// <summary>True when no rule restricts visibility (lengths aside).</summary>
    internal bool IsDense => !Causal && _windowLeft < 0 && _windowRight < 0 && BlockMask is null;

    private static int CheckWindow(int value, string name) =>
        value < -1
            ? throw new ArgumentOutOfRangeException(name, value, $"{name} must be -1 (unbounded) or >= 0, got {value}.")
            : value;
}
