// Standard attention as a textbook writes it: materialise the [B, H, Sq, Sk] scores, softmax each row, multiply by V.
using System.Numerics.Tensors;

namespace FastAttention.Bench.Peers;

/// <summary>
/// The naive C# baseline: allocates the full fp32 score tensor <c>[B, H, Sq, Sk]</c> on every call (as a
/// framework's unfused "math" path does), fills it with <c>scale · q·k</c> (one <see cref="TensorPrimitives.Dot(ReadOnlySpan{float}, ReadOnlySpan{float})"/>
/// per pair), turns each row into probabilities in place (max-subtracted softmax), then accumulates
/// <c>o += p·v</c> row by row. Parallel over (batch, head) with the same thread count as the others. Same
/// semantics as FastAttention: scale <c>1/√D</c>, causal bottom-right aligned, GQA head <c>h</c> reads KV head
/// <c>h / (H / Hkv)</c>, a row that sees no key outputs zeros.
/// </summary>
internal static class NaiveAttention
{
    /// <summary>Bytes of the score tensor this baseline allocates per call: <c>4·B·H·Sq·Sk</c>.</summary>
    public static long ScoreBytes(int batch, int heads, int seqQ, int seqK) => 4L * batch * heads * seqQ * seqK;

    /// <summary>Largest score tensor a .NET array holds (elements).</summary>
    public static bool Fits(int batch, int heads, int seqQ, int seqK) => (long)batch * heads * seqQ * seqK <= Array.MaxLength;

    /// <summary>
    /// One forward call. <paramref name="q"/> <c>[B, Sq, H, D]</c>, <paramref name="k"/>/<paramref name="v"/>
    /// <c>[B, Sk, Hkv, D]</c>, <paramref name="output"/> <c>[B, Sq, H, D]</c>, all contiguous.
    /// </summary>
    public static void Forward(float[] q, float[] k, float[] v, float[] output,
        int batch, int seqQ, int seqK, int heads, int kvHeads, int headDim, bool causal, int threads)
    {
        if (!Fits(batch, heads, seqQ, seqK))
        {
            throw new ArgumentException($"the score tensor [{batch}, {heads}, {seqQ}, {seqK}] exceeds the largest .NET array.");
        }
        float[] scores = GC.AllocateUninitializedArray<float>((int)((long)batch * heads * seqQ * seqK));
        float scale = 1f / MathF.Sqrt(headDim);
        int group = heads / kvHeads;
        Parallel.For(0, batch * heads, new ParallelOptions { MaxDegreeOfParallelism = threads }, bh =>
        {
            int b = bh / heads, h = bh % heads, kvh = h / group;
            for (int i = 0; i < seqQ; i++)
            {
                Span<float> row = scores.AsSpan((int)(((long)bh * seqQ + i) * seqK), seqK);
                Span<float> o = output.AsSpan((int)((((long)b * seqQ + i) * heads + h) * headDim), headDim);
                ReadOnlySpan<float> qi = q.AsSpan((int)((((long)b * seqQ + i) * heads + h) * headDim), headDim);
                // Keys 0..last are visible (bottom-right aligned causal).
                int last = causal ? Math.Min(seqK - 1, i + seqK - seqQ) : seqK - 1;
                o.Clear();
                if (last < 0)
                {
                    row.Clear();
                    continue;
                }
                for (int j = 0; j <= last; j++)
                {
                    row[j] = scale * TensorPrimitives.Dot(qi, k.AsSpan((int)((((long)b * seqK + j) * kvHeads + kvh) * headDim), headDim));
                }
                row[(last + 1)..].Clear();
                Span<float> visible = row[..(last + 1)];
                float max = TensorPrimitives.Max(visible);
                TensorPrimitives.Subtract(visible, max, visible);
                TensorPrimitives.Exp(visible, visible);
                float sum = TensorPrimitives.Sum(visible);
                for (int j = 0; j <= last; j++)
                {
                    TensorPrimitives.MultiplyAdd(v.AsSpan((int)((((long)b * seqK + j) * kvHeads + kvh) * headDim), headDim), visible[j], o, o);
                }
                TensorPrimitives.Multiply(o, 1f / sum, o);
            }
        });
        GC.KeepAlive(scores);
    }
}
