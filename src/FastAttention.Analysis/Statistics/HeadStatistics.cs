// Per-head statistics of an attention probability matrix and the rules that name what a head does.
namespace FastAttention.Analysis.Statistics;

/// <summary>What a head mostly does, by the rules of <see cref="HeadStatistics.Classify"/>.</summary>
public enum HeadKind
{
    /// <summary>Most weight on special tokens (<c>[CLS]</c>/<c>[SEP]</c>): a "no-op" or sink head.</summary>
    SpecialToken,
    /// <summary>Most weight on the previous token.</summary>
    PreviousToken,
    /// <summary>Most weight within one position of the query (itself or the next token): attends by relative position.</summary>
    Positional,
    /// <summary>Weight spread over many keys (high normalised entropy).</summary>
    Broad,
    /// <summary>None of the above: content-dependent, focused on a few keys.</summary>
    Mixed,
}

/// <summary>
/// Statistics of one head's attention probabilities <c>P [n, n]</c> over the first n (valid) tokens. Every figure is the
/// mean over the query rows i of a per-row figure (rows see keys <c>j &lt; n</c>, or <c>j &lt;= i</c> when causal):
/// <list type="bullet">
/// <item><see cref="Entropy"/>: <c>H_i = -Σ_j p_ij ln p_ij</c> (nats; 0 for one-hot, <c>ln k</c> for uniform over k keys).</item>
/// <item><see cref="NormalizedEntropy"/>: <c>H_i / ln k_i</c> with k_i the keys row i sees (rows with one key are skipped): 0 focused … 1 uniform.</item>
/// <item><see cref="EffectiveKeys"/>: <c>exp(H_i)</c>, the number of keys a uniform row of the same entropy would spread over.</item>
/// <item><see cref="MeanDistance"/>: <c>Σ_j p_ij |i - j|</c>, token distance weighted by probability.</item>
/// <item><see cref="Sparsity"/>: share of the visible weights p_ij below <see cref="HeadStatistics.DefaultThreshold"/> (or the threshold given).</item>
/// <item><see cref="SpecialFocus"/>: <c>Σ_{j special} p_ij</c>, weight on special tokens ([CLS], [SEP]).</item>
/// <item><see cref="PreviousFocus"/>, <see cref="SelfFocus"/>, <see cref="NextFocus"/>: <c>p_i,i-1</c>, <c>p_ii</c>, <c>p_i,i+1</c> (rows that have that key).</item>
/// </list>
/// </summary>
/// <param name="Layer">Layer index.</param>
/// <param name="Head">Head index.</param>
/// <param name="Tokens">Valid tokens n.</param>
/// <param name="Entropy">Mean row entropy (nats).</param>
/// <param name="NormalizedEntropy">Mean row entropy over ln(visible keys).</param>
/// <param name="EffectiveKeys">Mean exp(row entropy).</param>
/// <param name="MeanDistance">Mean attention distance (tokens).</param>
/// <param name="Sparsity">Share of visible weights below the threshold.</param>
/// <param name="SpecialFocus">Mean weight on special tokens.</param>
/// <param name="PreviousFocus">Mean weight on the previous token.</param>
/// <param name="SelfFocus">Mean weight on the query's own position.</param>
/// <param name="NextFocus">Mean weight on the next token.</param>
/// <param name="Kind">Classification (<see cref="HeadStatistics.Classify"/>).</param>
public sealed record HeadStatistics(int Layer, int Head, int Tokens, double Entropy, double NormalizedEntropy, double EffectiveKeys,
    double MeanDistance, double Sparsity, double SpecialFocus, double PreviousFocus, double SelfFocus, double NextFocus, HeadKind Kind)
{
    /// <summary>Default sparsity threshold: weights below 0.01 count as (near) zero.</summary>
    public const double DefaultThreshold = 0.01;
    /// <summary>A head whose mean weight on special tokens is at least this is a <see cref="HeadKind.SpecialToken"/> head.</summary>
    public const double SpecialThreshold = 0.5;
    /// <summary>A head whose mean weight on the previous token is at least this is a <see cref="HeadKind.PreviousToken"/> head.</summary>
    public const double PreviousThreshold = 0.5;
    /// <summary>A head whose mean weight within ±1 of the query (previous + self + next) is at least this is <see cref="HeadKind.Positional"/>.</summary>
    public const double PositionalThreshold = 0.5;
    /// <summary>A head whose normalised entropy is at least this is <see cref="HeadKind.Broad"/>.</summary>
    public const double BroadThreshold = 0.75;

    /// <summary>
    /// The classification rules, first match wins: special-token (<see cref="SpecialFocus"/> ≥ 0.5), previous-token
    /// (<see cref="PreviousFocus"/> ≥ 0.5), positional (<c>previous + self + next</c> ≥ 0.5), broad (<see cref="NormalizedEntropy"/> ≥ 0.75),
    /// otherwise mixed.
    /// </summary>
    public static HeadKind Classify(double specialFocus, double previousFocus, double selfFocus, double nextFocus, double normalizedEntropy) =>
        specialFocus >= SpecialThreshold ? HeadKind.SpecialToken
        : previousFocus >= PreviousThreshold ? HeadKind.PreviousToken
        : previousFocus + selfFocus + nextFocus >= PositionalThreshold ? HeadKind.Positional
        : normalizedEntropy >= BroadThreshold ? HeadKind.Broad
        : HeadKind.Mixed;

    /// <summary>Computes the statistics of one head.</summary>
    /// <param name="probabilities">Row-major <c>[rows, rowStride]</c> weights; the first <paramref name="tokens"/> rows and columns are used.</param>
    /// <param name="rowStride">Elements between rows (the padded key length Sk).</param>
    /// <param name="tokens">Valid tokens n (queries and keys).</param>
    /// <param name="isSpecial">Per key position, whether it is a special token (length ≥ n); null = none.</param>
    /// <param name="causal">Rows see only keys j ≤ i (for the normalised entropy and the sparsity count).</param>
    /// <param name="layer">Layer index (recorded).</param>
    /// <param name="head">Head index (recorded).</param>
    /// <param name="threshold">Sparsity threshold.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="tokens"/> is not positive or exceeds the stride, or the span is too short.</exception>
    public static HeadStatistics Compute(ReadOnlySpan<float> probabilities, int rowStride, int tokens, IReadOnlyList<bool>? isSpecial = null,
        bool causal = false, int layer = 0, int head = 0, double threshold = DefaultThreshold)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokens);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(tokens, rowStride);
        if (probabilities.Length < (long)(tokens - 1) * rowStride + tokens)
        {
            throw new ArgumentOutOfRangeException(nameof(probabilities), probabilities.Length, $"needs at least {(long)(tokens - 1) * rowStride + tokens} elements for {tokens} rows of stride {rowStride}.");
        }
        if (isSpecial is not null && isSpecial.Count < tokens)
        {
            throw new ArgumentOutOfRangeException(nameof(isSpecial), isSpecial.Count, $"needs a flag for each of the {tokens} tokens.");
        }
        double entropy = 0, normalized = 0, effective = 0, distance = 0, special = 0, previous = 0, self = 0, next = 0;
        long small = 0, visible = 0;
        int normalizedRows = 0, previousRows = 0, nextRows = 0;
        for (int i = 0; i < tokens; i++)
        {
            var row = probabilities.Slice(i * rowStride, tokens);
            int keys = causal ? i + 1 : tokens;
            double h = 0, d = 0, s = 0;
            for (int j = 0; j < keys; j++)
            {
                double p = row[j];
                if (p > 0) h -= p * Math.Log(p);
                d += p * Math.Abs(i - j);
                if (isSpecial is not null && isSpecial[j]) s += p;
                if (p < threshold) small++;
            }
            visible += keys;
            entropy += h;
            effective += Math.Exp(h);
            distance += d;
            special += s;
            self += row[i];
            if (keys > 1)
            {
                normalized += h / Math.Log(keys);
                normalizedRows++;
            }
            if (i > 0)
            {
                previous += row[i - 1];
                previousRows++;
            }
            if (i + 1 < keys)
            {
                next += row[i + 1];
                nextRows++;
            }
        }
        double n = tokens;
        double normalizedEntropy = normalizedRows > 0 ? normalized / normalizedRows : 0;
        double previousFocus = previousRows > 0 ? previous / previousRows : 0;
        double nextFocus = nextRows > 0 ? next / nextRows : 0;
        var kind = Classify(special / n, previousFocus, self / n, nextFocus, normalizedEntropy);
        return new HeadStatistics(layer, head, tokens, entropy / n, normalizedEntropy, effective / n, distance / n, (double)small / visible,
            special / n, previousFocus, self / n, nextFocus, kind);
    }
}
