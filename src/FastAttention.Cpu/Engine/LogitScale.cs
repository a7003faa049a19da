// How the softmax scale is folded into the kernels: sign into Q, magnitude into a base-2 factor.

namespace FastAttention.Cpu.Engine;

/// <summary>
/// softmax(scale·S) = softmax(|scale|·(±S)): the kernels multiply Q by the scale's sign when packing it,
/// keep running maxima in raw score units, and exponentiate <c>2^((S - max)·Factor)</c>, so differences are
/// taken before scaling and logits near 1e4 keep their fp32 precision. A zero scale makes every logit 0.
/// </summary>
internal static class LogitScale
{
    public const float Log2E = 1.44269504088896341f;
    public const float Ln2 = 0.693147180559945309f;

    /// <summary>Multiplier folded into Q: the sign of the scale (0 for a zero scale, whose scores are all 0).</summary>
    public static float QuerySign(float scale) => scale > 0 ? 1f : scale < 0 ? -1f : 0f;

    /// <summary>Positive factor from raw score differences to base-2 logits: |scale|·log2(e) (1 for a zero scale).</summary>
    public static float Factor(float scale) => scale == 0 ? 1f : MathF.Abs(scale) * Log2E;

    /// <summary>Natural-log LSE from the raw running max and the base-2 sum of a row.</summary>
    public static float NaturalLse(float rawMax, float factor, float sum) => (rawMax * factor + MathF.Log2(sum)) * Ln2;
}
