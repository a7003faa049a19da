// Memory by sequence length: what standard attention (materialised scores) allocates vs what FastAttention allocates, measured.
using System.Numerics.Tensors;
using FastAttention.Bench.Peers;
using FastAttention.Cpu;

namespace FastAttention.Bench;

/// <summary>
/// One memory row. Allocations are measured with <see cref="GC.GetTotalAllocatedBytes(bool)"/> (precise, all
/// threads) around one call; the caller's own Q, K, V and O are allocated before and not counted.
/// </summary>
/// <param name="Seq">S = Sq = Sk.</param>
/// <param name="ScoreBytes">The fp32 score tensor [B, H, S, S] a materialising implementation needs: 4·B·H·S².</param>
/// <param name="IoBytes">Q + K + V + O, fp32 (the caller's buffers, for scale).</param>
/// <param name="NaiveBytes">Measured allocation of one naive call (second call, so JIT work is excluded); null when not run.</param>
/// <param name="NaiveNote">Why the naive call did not run.</param>
/// <param name="FastFirstBytes">FastAttention's first call at this shape in this process: its pooled K/V pack buffers and per-thread scratch are created here unless an earlier call of at least this size already did.</param>
/// <param name="FastWarmBytes">FastAttention's third call: the steady state, pooled and thread-static scratch reused.</param>
internal sealed record MemoryRow(int Seq, long ScoreBytes, long IoBytes, long? NaiveBytes, string? NaiveNote, long FastFirstBytes, long FastWarmBytes);

/// <summary>The memory section: B = 1, H = Hkv = 8, D = 64, fp32, non-causal.</summary>
internal static class MemorySweep
{
    public const int Batch = 1, Heads = 8, HeadDim = 64;

    public static int[] Lengths(RunScale scale) => scale switch
    {
        RunScale.Smoke => [32, 64],
        RunScale.Quick => [512, 1024, 2048],
        _ => [512, 1024, 2048, 4096, 8192, 16384],
    };

    /// <summary>Bytes allocated (all threads) while <paramref name="action"/> runs.</summary>
    public static long Allocated(Action action)
    {
        long before = GC.GetTotalAllocatedBytes(precise: true);
        action();
        return GC.GetTotalAllocatedBytes(precise: true) - before;
    }

    public static List<MemoryRow> Run(RunScale scale, IReadOnlyList<int>? seqs, int threads, Action<string> log)
    {
        var rows = new List<MemoryRow>();
        long budget = Compare.NaiveBudgetBytes(scale);
        foreach (int s in seqs?.ToArray() ?? Lengths(scale))
        {
            var c = new CompareCase(false, Batch, s, s, Heads, Heads, HeadDim, false);
            var data = CompareData.Create(c, seed: 77 + s);
            float[] output = new float[data.Q.Length];
            long io = 4L * (data.Q.Length + data.K.Length + data.V.Length + output.Length);
            var options = new AttentionOptions { MaxDegreeOfParallelism = threads };
            void Fast() => CpuAttention.Forward<float>(
                new ReadOnlyTensorSpan<float>(data.Q, [Batch, s, Heads, HeadDim], default),
                new ReadOnlyTensorSpan<float>(data.K, [Batch, s, Heads, HeadDim], default),
                new ReadOnlyTensorSpan<float>(data.V, [Batch, s, Heads, HeadDim], default),
                new TensorSpan<float>(output, [Batch, s, Heads, HeadDim], default), options);
            long first = Allocated(Fast);
            Fast();
            long warm = Allocated(Fast);

            long scores = NaiveAttention.ScoreBytes(Batch, Heads, s, s);
            long? naive = null;
            string? note = null;
            if (scores > budget || !NaiveAttention.Fits(Batch, Heads, s, s))
            {
                note = $"not run: over this run's {budget >> 20} MiB budget";
            }
            else
            {
                float[] naiveOut = new float[output.Length];
                void Naive() => NaiveAttention.Forward(data.Q, data.K, data.V, naiveOut, Batch, s, s, Heads, Heads, HeadDim, false, threads);
                Naive();
                naive = Allocated(Naive);
            }
            rows.Add(new MemoryRow(s, scores, io, naive, note, first, warm));
            log($"memory S={s}: scores {scores / 1048576.0:F1} MiB, naive {(naive is { } n ? $"{n / 1048576.0:F1} MiB" : "not run")}, " +
                $"FastAttention first {first / 1024.0:F1} KiB, warm {warm / 1024.0:F1} KiB");
            GC.Collect();
        }
        return rows;
    }
}
