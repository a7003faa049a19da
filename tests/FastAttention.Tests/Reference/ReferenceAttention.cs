// Plain double-precision attention and softmax written from the specification (materialised scores,
// max-subtracted softmax), plus the "naive computation in the element's own precision" that the
// fp16/bf16 tolerance policy is measured against (DESIGN.md section 4). Nothing here calls the engine.

namespace FastAttention.Tests.Reference;

/// <summary>Reference results: output <c>[B,Sq,H,D]</c>, LSE <c>[B,H,Sq]</c>, probabilities <c>[B,H,Sq,Sk]</c>.</summary>
internal sealed record ReferenceResult(double[] Output, double[] LogSumExp, double[]? Probabilities);

internal static class ReferenceAttention
{
    /// <summary>
    /// The visibility rule, re-derived from the specification: batch b, Lq = QueryLengths?[b] ?? Sq,
    /// Lk = KeyLengths?[b] ?? Sk, off = Lk - Lq; query i &lt; Lq of head h sees key j iff j &lt; Lk and
    /// (!Causal || j &lt;= i+off) and (WindowLeft &lt; 0 || j &gt;= i+off-WindowLeft) and
    /// (WindowRight &lt; 0 || j &lt;= i+off+WindowRight) and (BlockMask == null || kept(h, i/BQ, j/BK)).
    /// </summary>
    public static bool Sees(AttentionMask m, int b, int h, int i, int j, int sq, int sk)
    {
        int lq = m.QueryLengths is { } ql ? ql[b] : sq;
        int lk = m.KeyLengths is { } kl ? kl[b] : sk;
        if (i >= lq || j >= lk) return false;
        long diag = (long)i + lk - lq;
        if (m.Causal && j > diag) return false;
        if (m.WindowLeft >= 0 && j < diag - m.WindowLeft) return false;
        if (m.WindowRight >= 0 && j > diag + m.WindowRight) return false;
        if (m.BlockMask is { } bm && !bm.IsKept(bm.Heads == 1 ? 0 : h, i / bm.BlockSizeQ, j / bm.BlockSizeK)) return false;
        return true;
    }

    /// <summary>
    /// Attention in double from inputs given as float (already rounded to the element type), all BSHD
    /// contiguous. Rows that see no key: output 0, LSE -inf, probabilities 0.
    /// </summary>
    public static ReferenceResult Forward(float[] q, float[] k, float[] v, AttentionShape s, double scale, AttentionMask mask, bool wantProbabilities)
    {
        int B = s.Batch, Sq = s.QueryLength, Sk = s.KeyLength, H = s.Heads, Hkv = s.KvHeads, D = s.HeadDim;
        int group = H / Hkv;
        var output = new double[(long)B * Sq * H * D];
        var lse = new double[(long)B * H * Sq];
        var probs = wantProbabilities ? new double[(long)B * H * Sq * Sk] : null;
        Parallel.For(0, B * H, bh =>
        {
            int b = bh / H, h = bh % H, kh = h / group;
            var kd = new double[(long)Sk * D];
            var vd = new double[(long)Sk * D];
            for (int j = 0; j < Sk; j++)
            {
                for (int d = 0; d < D; d++)
                {
                    long src = (((long)b * Sk + j) * Hkv + kh) * D + d;
                    kd[(long)j * D + d] = k[src];
                    vd[(long)j * D + d] = v[src];
                }
            }
            var qrow = new double[D];
            var score = new double[Sk];
            var visible = new bool[Sk];
            var acc = new double[D];
            for (int i = 0; i < Sq; i++)
            {
                long qBase = (((long)b * Sq + i) * H + h) * D;
                for (int d = 0; d < D; d++) qrow[d] = q[qBase + d];
                double max = double.NegativeInfinity;
                bool any = false;
                for (int j = 0; j < Sk; j++)
                {
                    visible[j] = Sees(mask, b, h, i, j, Sq, Sk);
                    if (!visible[j]) continue;
                    double dot = 0;
                    long kBase = (long)j * D;
                    for (int d = 0; d < D; d++) dot += qrow[d] * kd[kBase + d];
                    score[j] = scale * dot;
                    max = Math.Max(max, score[j]);
                    any = true;
                }
                long lseIndex = ((long)b * H + h) * Sq + i;
                long pBase = (((long)b * H + h) * Sq + i) * Sk;
                if (!any)
                {
                    lse[lseIndex] = double.NegativeInfinity;
                    continue; // output and probabilities stay 0
                }
                double sum = 0;
                for (int j = 0; j < Sk; j++)
                {
                    if (visible[j]) sum += Math.Exp(score[j] - max);
                }
                lse[lseIndex] = max + Math.Log(sum);
                Array.Clear(acc);
                for (int j = 0; j < Sk; j++)
                {
                    if (!visible[j]) continue;
                    double p = Math.Exp(score[j] - max) / sum;
                    if (probs is not null) probs[pBase + j] = p;
                    long vBase = (long)j * D;
                    for (int d = 0; d < D; d++) acc[d] += p * vd[vBase + d];
                }
                for (int d = 0; d < D; d++) output[qBase + d] = acc[d];
            }
        });
        return new ReferenceResult(output, lse, probs);
    }

    /// <summary>
    /// The same attention done naively in the element type's precision (FlashAttention's baseline):
    /// S = Q·Kᵀ accumulated in float then rounded to T; scale and softmax in float, P rounded to T;
    /// O = P·V accumulated in float then rounded to T. Returns O as float (values representable in T).
    /// </summary>
    public static float[] NaiveForward<T>(float[] q, float[] k, float[] v, AttentionShape s, float scale, AttentionMask mask)
    {
        int B = s.Batch, Sq = s.QueryLength, Sk = s.KeyLength, H = s.Heads, Hkv = s.KvHeads, D = s.HeadDim;
        int group = H / Hkv;
        var output = new float[(long)B * Sq * H * D];
        Parallel.For(0, B * H, bh =>
        {
            int b = bh / H, h = bh % H, kh = h / group;
            var x = new float[Sk];
            var visible = new bool[Sk];
            var acc = new float[D];
            for (int i = 0; i < Sq; i++)
            {
                long qBase = (((long)b * Sq + i) * H + h) * D;
                float max = float.NegativeInfinity;
                bool any = false;
                for (int j = 0; j < Sk; j++)
                {
                    visible[j] = Sees(mask, b, h, i, j, Sq, Sk);
                    if (!visible[j]) continue;
                    long kBase = (((long)b * Sk + j) * Hkv + kh) * D;
                    float dot = 0;
                    for (int d = 0; d < D; d++) dot += q[qBase + d] * k[kBase + d];
                    x[j] = Num.Round<T>(dot) * scale;
                    max = MathF.Max(max, x[j]);
                    any = true;
                }
                if (!any) continue;
                float sum = 0;
                for (int j = 0; j < Sk; j++)
                {
                    if (!visible[j]) continue;
                    x[j] = MathF.Exp(x[j] - max);
                    sum += x[j];
                }
                Array.Clear(acc);
                for (int j = 0; j < Sk; j++)
                {
                    if (!visible[j]) continue;
                    float p = Num.Round<T>(x[j] / sum);
                    long vBase = (((long)b * Sk + j) * Hkv + kh) * D;
                    for (int d = 0; d < D; d++) acc[d] += p * v[vBase + d];
                }
                for (int d = 0; d < D; d++) output[qBase + d] = Num.Round<T>(acc[d]);
            }
        });
        return output;
    }

    /// <summary>
    /// Masked softmax of materialised scores <c>[B,H,Sq,Sk]</c> (H = axis 1) in double:
    /// softmax(scale · scores) over visible keys, 0 elsewhere, all-zero rows that see nothing.
    /// </summary>
    public static double[] Softmax(float[] scores, int B, int H, int Sq, int Sk, double scale, AttentionMask mask)
    {
        var result = new double[scores.Length];
        Parallel.For(0, B * H, bh =>
        {
            int b = bh / H, h = bh % H;
            for (int i = 0; i < Sq; i++)
            {
                long row = ((long)bh * Sq + i) * Sk;
                double max = double.NegativeInfinity;
                for (int j = 0; j < Sk; j++)
                {
                    if (Sees(mask, b, h, i, j, Sq, Sk)) max = Math.Max(max, scale * scores[row + j]);
                }
                if (double.IsNegativeInfinity(max)) continue;
                double sum = 0;
                for (int j = 0; j < Sk; j++)
                {
                    if (Sees(mask, b, h, i, j, Sq, Sk)) sum += Math.Exp(scale * scores[row + j] - max);
                }
                for (int j = 0; j < Sk; j++)
                {
                    if (Sees(mask, b, h, i, j, Sq, Sk)) result[row + j] = Math.Exp(scale * scores[row + j] - max) / sum;
                }
            }
        });
        return result;
    }

    /// <summary>The masked softmax done naively in float, each probability rounded to <typeparamref name="T"/>.</summary>
    public static float[] NaiveSoftmax<T>(float[] scores, int B, int H, int Sq, int Sk, float scale, AttentionMask mask)
    {
        var result = new float[scores.Length];
        Parallel.For(0, B * H, bh =>
        {
            int b = bh / H, h = bh % H;
            var e = new float[Sk];
            for (int i = 0; i < Sq; i++)
            {
                long row = ((long)bh * Sq + i) * Sk;
                float max = float.NegativeInfinity;
                for (int j = 0; j < Sk; j++)
                {
                    if (Sees(mask, b, h, i, j, Sq, Sk)) max = MathF.Max(max, scale * scores[row + j]);
                }
                if (float.IsNegativeInfinity(max)) continue;
                float sum = 0;
                for (int j = 0; j < Sk; j++)
                {
                    e[j] = Sees(mask, b, h, i, j, Sq, Sk) ? MathF.Exp(scale * scores[row + j] - max) : 0f;
                    sum += e[j];
                }
                for (int j = 0; j < Sk; j++) result[row + j] = Num.Round<T>(e[j] / sum);
            }
        });
        return result;
    }
}
