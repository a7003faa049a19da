// Standalone fused softmax over materialised scores: scale + mask + max-subtracted softmax per row.
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;

namespace FastAttention.Cpu.Engine;

/// <summary>Row softmax of <c>[B, H, Sq, Sk]</c> scores with the attention mask rules.</summary>
internal static unsafe class FusedSoftmax
{
    public static void Run<T>(AttentionShape s, float scale, AttentionMask mask, int parallelism,
        ReadOnlyTensorSpan<T> scores, TensorSpan<T> output) where T : unmanaged
    {
        fixed (T* xp = &Elements.First(scores), yp = &Elements.First(output))
        {
            var x = View<T>.Of(xp, scores.Strides);
            var y = View<T>.Of(yp, output.Strides);
            long rows = (long)s.Batch * s.Heads * s.QueryLength;
            Parallel.For(0L, rows, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, r =>
            {
                int i = (int)(r % s.QueryLength), h = (int)(r / s.QueryLength % s.Heads), b = (int)(r / s.QueryLength / s.Heads);
                var sc = Scratch.Current;
                sc.Ensure(1, 1, 1, s.KeyLength, 0, 0);
                Row(s, scale, mask, new RowRules(mask, s, b), b, h, i, x, y, sc.Row);
            });
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Row<T>(AttentionShape s, float scale, AttentionMask mask, RowRules rules, int b, int h, int i,
        View<T> x, View<T> y, float* buffer) where T : unmanaged
    {
        int sk = s.KeyLength;
        var row = new Span<float>(buffer, sk);
        int lo = rules.Lo(i), hi = rules.Hi(i);
        if (i >= rules.QueryLength || lo > hi)
        {
            Elements.Zero(y.At(b, h, i), y.S3, sk);
            return;
        }
        Elements.Read(x.At(b, h, i), x.S3, sk, buffer);
        var visible = row[lo..(hi + 1)];
        // softmax(scale·x) = softmax(|scale|·(±x)); take differences from the max before scaling so
        // logits near 1e4 keep their fp32 precision. A zero scale makes every visible logit 0.
        if (scale < 0) TensorPrimitives.Negate(visible, visible);
        else if (scale == 0) visible.Clear();
        if (mask.BlockMask is { } bm)
        {
            var keep = bm.Row(h, i / bm.BlockSizeQ);
            for (int j = lo; j <= hi; j++)
            {
                if (!keep[j / bm.BlockSizeK]) row[j] = float.NegativeInfinity;
            }
        }
        float max = TensorPrimitives.Max(visible);
        if (float.IsNegativeInfinity(max))
        {
            Elements.Zero(y.At(b, h, i), y.S3, sk);
            return;
        }
        TensorPrimitives.Subtract(visible, max, visible);
        TensorPrimitives.Multiply(visible, scale == 0 ? 1f : MathF.Abs(scale), visible);
        TensorPrimitives.Exp(visible, visible);
        float sum = TensorPrimitives.Sum(visible);
        row[..lo].Clear();
        row[(hi + 1)..].Clear();
        Elements.Write(buffer, 1, 1f / sum, sk, y.At(b, h, i), y.S3);
    }
}
