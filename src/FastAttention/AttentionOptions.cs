// Per-call options of an attention forward: scale, mask rules, parallelism.

namespace FastAttention;

/// <summary>Vector width of the CPU kernels.</summary>
internal enum VectorWidth
{
    Auto,
    V512,
    V256,
    V128,
}

/// <summary>Options of one attention forward call.</summary>
public sealed record AttentionOptions
{
    private readonly float? _scale;
    private readonly int _maxDegreeOfParallelism = -1;

    /// <summary>Default options: scale 1/sqrt(headDim), no mask, all cores.</summary>
    public static AttentionOptions Default { get; } = new();

    /// <summary>Softmax scale applied to Q·Kᵀ; null = <c>1/sqrt(headDim)</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is NaN or infinite.</exception>
    public float? Scale
    {
        get => _scale;
        init => _scale = value is { } s && !float.IsFinite(s)
            ? throw new ArgumentOutOfRangeException(nameof(Scale), s, $"{nameof(Scale)} must be finite, got {s}.")
            : value;
    }

    /// <summary>Which keys each query sees.</summary>
    /// <exception cref="ArgumentNullException">The value is null.</exception>
    public AttentionMask Mask
    {
        get;
        init => field = value ?? throw new ArgumentNullException(nameof(Mask));
    } = AttentionMask.None;

    /// <summary>Upper bound on worker threads; -1 = all processors.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is 0 or less than -1.</exception>
    public int MaxDegreeOfParallelism
    {
        get => _maxDegreeOfParallelism;
        init => _maxDegreeOfParallelism = value == 0 || value < -1
            ? throw new ArgumentOutOfRangeException(nameof(MaxDegreeOfParallelism), value,
                $"{nameof(MaxDegreeOfParallelism)} must be -1 (all processors) or >= 1, got {value}.")
            : value;
    }

    /// <summary>
    /// Vector width the CPU kernels use; <see cref="VectorWidth.Auto"/> = the widest the processor
    /// accelerates. Internal: tests force the narrower paths so AVX2-only and 128-bit machines' code is
    /// checked on this one.
    /// </summary>
    internal VectorWidth Width { get; init; }

    /// <summary>The scale to use for head dimension <paramref name="headDim"/>.</summary>
    public float ResolveScale(int headDim) => _scale ?? 1f / MathF.Sqrt(headDim);

    /// <summary>Number of worker threads to use.</summary>
    internal int ResolveParallelism() => _maxDegreeOfParallelism < 0 ? Environment.ProcessorCount : _maxDegreeOfParallelism;
}
