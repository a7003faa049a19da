// GPU decode options beyond AttentionOptions: logit softcap, kernel version, forced split count.

namespace FastAttention.Gpu;

/// <summary>Which decode kernel runs (DESIGN.md section 3: each family keeps a plain version beside the tuned one).</summary>
public enum DecodeKernel
{
    /// <summary>The vectorised kernel: the query rows sharing a KV head in one block, 16-byte K/V loads, several keys in flight per lane.</summary>
    Tuned,
    /// <summary>The plain SIMT kernel: one block per query head, one key at a time. The reference on a new GPU.</summary>
    Plain,
}

/// <summary>Options of a GPU decode call that <see cref="AttentionOptions"/> does not carry.</summary>
public sealed record GpuDecodeOptions
{
    private readonly float _softcap;
    private readonly int? _splits;

    /// <summary>No softcap, tuned kernel, planner-chosen splits.</summary>
    public static GpuDecodeOptions Default { get; } = new();

    /// <summary>
    /// Logit softcap (Gemma 2, Grok): logits become <c>Softcap * tanh(scale * q.k / Softcap)</c>. 0 (default) = off.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is negative, NaN or infinite.</exception>
    public float Softcap
    {
        get => _softcap;
        init => _softcap = float.IsFinite(value) && value >= 0
            ? value
            : throw new ArgumentOutOfRangeException(nameof(Softcap), value, $"{nameof(Softcap)} must be finite and >= 0 (0 = off), got {value}.");
    }

    /// <summary>The kernel version; <see cref="DecodeKernel.Tuned"/> by default.</summary>
    public DecodeKernel Kernel { get; init; }

    /// <summary>
    /// Key-axis partitions to use instead of <see cref="DecodePlanner"/>'s choice (tests, tuning); null = planner.
    /// Fewer are used when the context is shorter than that many pages.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is less than 1.</exception>
    public int? Splits
    {
        get => _splits;
        init => _splits = value is { } s && s < 1
            ? throw new ArgumentOutOfRangeException(nameof(Splits), s, $"{nameof(Splits)} must be >= 1 or null, got {s}.")
            : value;
    }
}
