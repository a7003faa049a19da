// Runs CpuAttention.Forward on BSHD test arrays and checks the results against the double reference.

using FastAttention.Cpu;

namespace FastAttention.Tests.Reference;

/// <summary>Engine results as float arrays: output <c>[B,Sq,H,D]</c>, LSE <c>[B,H,Sq]</c>, probabilities <c>[B,H,Sq,Sk]</c>.</summary>
internal sealed record EngineResult(float[] Output, float[]? LogSumExp, float[]? Probabilities);

/// <summary>Inputs of one attention call, BSHD contiguous, in element type <typeparamref name="T"/>.</summary>
internal sealed class AttentionInputs<T> where T : unmanaged
{
    public required AttentionShape Shape { get; init; }
    public required T[] Q { get; init; }
    public required T[] K { get; init; }
    public required T[] V { get; init; }

    public static AttentionInputs<T> Random(AttentionShape s, ulong seed, double sigma = 1.0)
    {
        var rng = new Rng(seed);
        return new AttentionInputs<T>
        {
            Shape = s,
            Q = rng.Normal<T>(s.Batch * s.QueryLength * s.Heads * s.HeadDim, sigma),
            K = rng.Normal<T>(s.Batch * s.KeyLength * s.KvHeads * s.HeadDim, sigma),
            V = rng.Normal<T>(s.Batch * s.KeyLength * s.KvHeads * s.HeadDim),
        };
    }

    public int[] OutputDims => [Shape.Batch, Shape.QueryLength, Shape.Heads, Shape.HeadDim];
    public int[] LseDims => [Shape.Batch, Shape.Heads, Shape.QueryLength];
    public int[] ProbDims => [Shape.Batch, Shape.Heads, Shape.QueryLength, Shape.KeyLength];

    /// <summary>
    /// Copies of Q, K and V with NaN in every padding row (query rows past <see cref="AttentionMask.QueryLengths"/>,
    /// key/value rows past <see cref="AttentionMask.KeyLengths"/>), so a kernel that reads padding fails.
    /// </summary>
    public (T[] Q, T[] K, T[] V) WithPoisonedPadding(AttentionMask mask)
    {
        var s = Shape;
        T nan = Num.FromFloat<T>(float.NaN);
        var q = (T[])Q.Clone();
        var k = (T[])K.Clone();
        var v = (T[])V.Clone();
        for (int b = 0; b < s.Batch; b++)
        {
            int lq = mask.QueryLengths?[b] ?? s.QueryLength, lk = mask.KeyLengths?[b] ?? s.KeyLength;
            Array.Fill(q, nan, (b * s.QueryLength + lq) * s.Heads * s.HeadDim, (s.QueryLength - lq) * s.Heads * s.HeadDim);
            Array.Fill(k, nan, (b * s.KeyLength + lk) * s.KvHeads * s.HeadDim, (s.KeyLength - lk) * s.KvHeads * s.HeadDim);
            Array.Fill(v, nan, (b * s.KeyLength + lk) * s.KvHeads * s.HeadDim, (s.KeyLength - lk) * s.KvHeads * s.HeadDim);
        }
        return (q, k, v);
    }

    /// <summary>
    /// Runs the engine with every destination pre-filled with NaN (so an element it forgets to write fails).
    /// </summary>
    public EngineResult Run(AttentionOptions options, bool wantLse = true, bool wantProbabilities = false)
    {
        var s = Shape;
        var o = Num.Filled<T>(s.Batch * s.QueryLength * s.Heads * s.HeadDim, float.NaN);
        var lse = wantLse ? Num.Filled<float>(s.Batch * s.Heads * s.QueryLength, float.NaN) : null;
        var p = wantProbabilities ? Num.Filled<float>(s.Batch * s.Heads * s.QueryLength * s.KeyLength, float.NaN) : null;
        CpuAttention.Forward<T>(
            Views.Bshd(Q, s.Batch, s.QueryLength, s.Heads, s.HeadDim),
            Views.Bshd(K, s.Batch, s.KeyLength, s.KvHeads, s.HeadDim),
            Views.Bshd(V, s.Batch, s.KeyLength, s.KvHeads, s.HeadDim),
            Views.Bshd(o, s.Batch, s.QueryLength, s.Heads, s.HeadDim),
            options,
            lse is null ? default : Views.Bhs(lse, s.Batch, s.Heads, s.QueryLength),
            p is null ? default : Views.Bhqk(p, s.Batch, s.Heads, s.QueryLength, s.KeyLength));
        return new EngineResult(Num.ToFloats<T>(o), lse, p);
    }

    public ReferenceResult Reference(AttentionOptions options, bool wantProbabilities) =>
        ReferenceAttention.Forward(Num.ToFloats<T>(Q), Num.ToFloats<T>(K), Num.ToFloats<T>(V), Shape,
            options.ResolveScale(Shape.HeadDim), options.Mask, wantProbabilities);

    /// <summary>
    /// Checks engine results against the reference: output by the element type's policy, LSE and
    /// probabilities (fp32 outputs) by the fp32 policy.
    /// </summary>
    public void AssertMatchesReference(EngineResult actual, AttentionOptions options, string label)
    {
        var expected = Reference(options, actual.Probabilities is not null);
        if (Num.IsHalfPrecision<T>())
        {
            var naive = ReferenceAttention.NaiveForward<T>(Num.ToFloats<T>(Q), Num.ToFloats<T>(K), Num.ToFloats<T>(V), Shape,
                options.ResolveScale(Shape.HeadDim), options.Mask);
            Tolerance.AssertWithinNaive(actual.Output, expected.Output, naive, $"{label} output ({Num.Name<T>()})", OutputDims);
        }
        else
        {
            Tolerance.AssertClose(actual.Output, expected.Output, $"{label} output (fp32)", OutputDims);
        }
        if (actual.LogSumExp is not null)
        {
            Tolerance.AssertClose(actual.LogSumExp, expected.LogSumExp, $"{label} logSumExp", LseDims);
        }
        if (actual.Probabilities is not null)
        {
            Tolerance.AssertClose(actual.Probabilities, expected.Probabilities!, $"{label} probabilities", ProbDims);
        }
    }
}
