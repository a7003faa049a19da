// `compare`: the same shapes through FastAttention, ONNX Runtime (CPU provider) and a naive C# baseline, in one process.
using System.Numerics.Tensors;
using FastAttention.Cpu;
using FastAttention.Cpu.Caching;

namespace FastAttention.Bench.Peers;

/// <summary>One shape to compare. <paramref name="Decode"/>: one new token (Sq = 1) against an Sk-token context.</summary>
internal sealed record CompareCase(bool Decode, int Batch, int SeqQ, int SeqK, int Heads, int KvHeads, int HeadDim, bool Causal)
{
    public AttentionShape Shape => new(Batch, SeqQ, SeqK, Heads, KvHeads, HeadDim);

    /// <summary>FLOPs per call, FlashAttention's count (4·B·H·Sq·Sk·D, halved for causal).</summary>
    public double Flops => Shape.Flops(Causal);

    /// <summary>Bytes of K and V (fp32) read per call: <c>2·4·B·Sk·Hkv·D</c> (the decode bound).</summary>
    public double KvBytes => 2.0 * 4 * Batch * SeqK * KvHeads * HeadDim;

    /// <summary>"prefill D=64 S=1024 causal" or "decode B=8 D=128 ctx=4096".</summary>
    public string Name => Decode
        ? $"decode B={Batch} H={Heads} D={HeadDim} ctx={SeqK}"
        : $"prefill B={Batch} H={Heads} D={HeadDim} S={SeqQ}{(Causal ? " causal" : "")}";
}

/// <summary>fp32 inputs of a case: Q <c>[B, Sq, H, D]</c>, K/V <c>[B, Sk, Hkv, D]</c> and their <c>[B, Hkv, Sk, D]</c> copies.</summary>
internal sealed class CompareData
{
    public required float[] Q { get; init; }
    public required float[] K { get; init; }
    public required float[] V { get; init; }
    public required float[] KBhsd { get; init; }
    public required float[] VBhsd { get; init; }

    public static CompareData Create(CompareCase c, int seed)
    {
        var rng = new Random(seed);
        float[] Fill(long n)
        {
            var a = GC.AllocateUninitializedArray<float>(checked((int)n));
            for (int i = 0; i < a.Length; i++) a[i] = rng.NextSingle() * 2f - 1f;
            return a;
        }
        float[] ToBhsd(float[] x)
        {
            var y = GC.AllocateUninitializedArray<float>(x.Length);
            for (int b = 0; b < c.Batch; b++)
                for (int s = 0; s < c.SeqK; s++)
                    for (int h = 0; h < c.KvHeads; h++)
                        x.AsSpan((((b * c.SeqK) + s) * c.KvHeads + h) * c.HeadDim, c.HeadDim)
                            .CopyTo(y.AsSpan((((b * c.KvHeads) + h) * c.SeqK + s) * c.HeadDim, c.HeadDim));
            return y;
        }
        float[] k = Fill((long)c.Batch * c.SeqK * c.KvHeads * c.HeadDim), v = Fill(k.Length);
        return new CompareData
        {
            Q = Fill((long)c.Batch * c.SeqQ * c.Heads * c.HeadDim),
            K = k,
            V = v,
            KBhsd = ToBhsd(k),
            VBhsd = ToBhsd(v),
        };
    }
}

/// <summary>One implementation on one case. <see cref="Time"/> is null when it did not run (<see cref="Note"/> says why).</summary>
/// <param name="PairedSpeedup">When timed in alternating blocks with FastAttention: the median over rounds of this block's median ÷ FastAttention's.</param>
internal sealed record CompareRow(CompareCase Case, string Impl, string Device, string Detail, Measurement? Time, double MaxAbsDiff, string? Note,
    double? PairedSpeedup = null)
{
    public double? GFlops => Time is { } t ? Case.Flops / (t.MedianMs * 1e-3) / 1e9 : null;
    public double? GBs => Time is { } t ? Case.KvBytes / (t.MedianMs * 1e-3) / 1e9 : null;
}

/// <summary>The implementations compared, by name in the results.</summary>
internal static class Impl
{
    public const string FastAttention = "fastattention";
    public const string OnnxRuntime = "onnxruntime";
    public const string Naive = "naive";
    public const string TorchSdpa = "torch-sdpa";
}

/// <summary>Runs the compare cases.</summary>
internal static class Compare
{
    /// <summary>Peers a run may include.</summary>
    public static readonly string[] PeerNames = [Impl.OnnxRuntime, Impl.Naive];

    /// <summary>
    /// Cases: prefill B = 1, H = Hkv = 8, S = Sq = Sk, non-causal and causal, D = 64 and 128; decode B = 8,
    /// H = Hkv = 8, D = 128, one token against a context. Quick: S 512..2048 (D 64) and 1024..2048 (D 128),
    /// contexts 1024 and 4096; full: S 512..8192, contexts 1024..16384. <paramref name="seqs"/> and
    /// <paramref name="headDims"/> replace the prefill lengths and head dims when given.
    /// </summary>
    public static List<CompareCase> Cases(RunScale scale, IReadOnlyList<int>? seqs, IReadOnlyList<int>? headDims, int heads = 8)
    {
        var cases = new List<CompareCase>();
        int[] dims = headDims?.ToArray() ?? (scale == RunScale.Smoke ? [16] : [64, 128]);
        foreach (int d in dims)
        {
            int[] lengths = seqs?.ToArray() ?? scale switch
            {
                RunScale.Smoke => [32, 48],
                RunScale.Quick => d <= 64 ? [512, 1024, 2048] : [1024, 2048],
                _ => [512, 1024, 2048, 4096, 8192],
            };
            foreach (int s in lengths)
                foreach (bool causal in new[] { false, true })
                    cases.Add(new CompareCase(false, 1, s, s, heads, heads, d, causal));
        }
        int[] contexts = scale switch
        {
            RunScale.Smoke => [40],
            RunScale.Quick => [1024, 4096],
            _ => [1024, 4096, 16384],
        };
        int decodeDim = scale == RunScale.Smoke ? 16 : 128, decodeBatch = scale == RunScale.Smoke ? 2 : 8;
        foreach (int ctx in contexts) cases.Add(new CompareCase(true, decodeBatch, 1, ctx, heads, heads, decodeDim, false));
        return cases;
    }

    /// <summary>
    /// Largest naive score tensor timed: quick 128 MiB (S 2048 at H 8), full 512 MiB (S 4096). Beyond that the naive
    /// baseline takes minutes per shape on a small machine and says nothing new (it is 10-50x behind long before).
    /// </summary>
    public static long NaiveBudgetBytes(RunScale scale) => scale == RunScale.Full ? 512L << 20 : 128L << 20;

    /// <summary>
    /// Times every case. FastAttention and ONNX Runtime run in alternating blocks (<see cref="Runner.MeasureAlternating"/>)
    /// after at least two warm-ups each (ONNX Runtime needs two), so a shared machine's changing load hits both
    /// alike; the naive baseline runs afterwards on its own (one warm-up, at most three required runs: it is slow,
    /// and 10x or more behind). Outputs are checked against
    /// FastAttention's (max |difference|) so a peer that computes something else shows.
    /// </summary>
    public static List<CompareRow> Run(IReadOnlyList<CompareCase> cases, IReadOnlySet<string> peers, RunScale scale, int threads,
        RunPolicy policy, Action<string> log, Action<string> warn)
    {
        var rows = new List<CompareRow>();
        var peerPolicy = policy with { WarmUps = Math.Max(2, policy.WarmUps) };
        string? ortUnavailable = null;
        if (peers.Contains(Impl.OnnxRuntime))
        {
            try
            {
                log($"ONNX Runtime {OnnxRuntimePeer.Version}, CPU execution provider, {threads} intra-op thread(s)");
            }
            catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or BadImageFormatException or EntryPointNotFoundException)
            {
                ortUnavailable = $"ONNX Runtime could not be loaded: {e.GetBaseException().Message}";
                warn($"{ortUnavailable} The ONNX Runtime rows are skipped; the rest of the run goes on.");
            }
        }

        int seed = 2024;
        foreach (var c in cases)
        {
            var data = CompareData.Create(c, seed++);
            float[] faOut = new float[data.Q.Length];
            var options = new AttentionOptions
            {
                Mask = c.Causal ? AttentionMask.CausalMask : AttentionMask.None,
                MaxDegreeOfParallelism = threads,
            };
            Action fa;
            string faDetail;
            if (c.Decode)
            {
                var cache = new KvCache<float>(c.Batch, c.SeqK, c.KvHeads, c.HeadDim);
                for (int b = 0; b < c.Batch; b++)
                {
                    int per = c.SeqK * c.KvHeads * c.HeadDim;
                    cache.Append(b, new ReadOnlyTensorSpan<float>(data.K.AsSpan(b * per, per), [c.SeqK, c.KvHeads, c.HeadDim], default),
                        new ReadOnlyTensorSpan<float>(data.V.AsSpan(b * per, per), [c.SeqK, c.KvHeads, c.HeadDim], default));
                }
                fa = () => CpuAttention.Decode<float>(new ReadOnlyTensorSpan<float>(data.Q, [c.Batch, 1, c.Heads, c.HeadDim], default), cache,
                    new TensorSpan<float>(faOut, [c.Batch, 1, c.Heads, c.HeadDim], default), options);
                faDetail = "CpuAttention.Decode over a KvCache";
            }
            else
            {
                fa = () => CpuAttention.Forward<float>(
                    new ReadOnlyTensorSpan<float>(data.Q, [c.Batch, c.SeqQ, c.Heads, c.HeadDim], default),
                    new ReadOnlyTensorSpan<float>(data.K, [c.Batch, c.SeqK, c.KvHeads, c.HeadDim], default),
                    new ReadOnlyTensorSpan<float>(data.V, [c.Batch, c.SeqK, c.KvHeads, c.HeadDim], default),
                    new TensorSpan<float>(faOut, [c.Batch, c.SeqQ, c.Heads, c.HeadDim], default), options);
                faDetail = "CpuAttention.Forward, BSHD";
            }
            // ONNX Runtime is timed in alternating blocks with FastAttention (same conditions for both on a shared
            // machine); FastAttention alone when ONNX Runtime is not part of the run or cannot run the case.
            OnnxRuntimePeer? ort = null;
            CompareRow? ortRow = null;
            if (peers.Contains(Impl.OnnxRuntime))
            {
                if (ortUnavailable is not null)
                {
                    ortRow = new CompareRow(c, Impl.OnnxRuntime, "cpu", "", null, double.NaN, ortUnavailable);
                }
                else
                {
                    (ort, ortRow) = CreateOrt(c, data, threads);
                }
            }
            using (ort)
            {
                if (ort is null)
                {
                    var faTime = Runner.Measure(fa, peerPolicy);
                    rows.Add(new CompareRow(c, Impl.FastAttention, "cpu", faDetail, faTime, 0, null));
                    log($"{c.Name}: FastAttention {faTime.MedianMs:F3} ms");
                }
                else
                {
                    var (faTime, ortTime, ratio) = Runner.MeasureAlternating(fa, ort.Run, peerPolicy);
                    double diff = MaxAbsDiff(faOut, ort.Output);
                    rows.Add(new CompareRow(c, Impl.FastAttention, "cpu", faDetail, faTime, 0, null));
                    ortRow = new CompareRow(c, Impl.OnnxRuntime, "cpu", ort.Operator, ortTime, diff, null, ratio);
                    log($"{c.Name}: FastAttention {faTime.MedianMs:F3} ms, ONNX Runtime ({ort.Operator}) {ortTime.MedianMs:F3} ms, " +
                        $"FA × ORT {ratio:F2}, max |diff| {diff:E1}");
                }
            }
            if (ortRow is not null) rows.Add(ortRow);

            if (peers.Contains(Impl.Naive))
            {
                long bytes = NaiveAttention.ScoreBytes(c.Batch, c.Heads, c.SeqQ, c.SeqK);
                if (bytes > NaiveBudgetBytes(scale) || !NaiveAttention.Fits(c.Batch, c.Heads, c.SeqQ, c.SeqK))
                {
                    rows.Add(new CompareRow(c, Impl.Naive, "cpu", "materialised scores", null, double.NaN,
                        $"not run: its {bytes / 1048576.0:F0} MiB score tensor is over this run's {NaiveBudgetBytes(scale) >> 20} MiB budget"));
                }
                else
                {
                    float[] naiveOut = new float[faOut.Length];
                    void Naive() => NaiveAttention.Forward(data.Q, data.K, data.V, naiveOut, c.Batch, c.SeqQ, c.SeqK, c.Heads, c.KvHeads,
                        c.HeadDim, c.Causal, threads);
                    // One warm-up is enough for plain managed code; at least three timed calls for a median.
                    var t = Runner.Measure(Naive, policy with { WarmUps = 1, MinRuns = Math.Min(policy.MinRuns, 3) });
                    double diff = MaxAbsDiff(faOut, naiveOut);
                    rows.Add(new CompareRow(c, Impl.Naive, "cpu", $"materialised [B,H,Sq,Sk] scores ({bytes / 1048576.0:F1} MiB per call)", t, diff, null));
                    log($"{c.Name}: naive {t.MedianMs:F3} ms, max |diff| {diff:E1}");
                }
            }
        }
        return rows;
    }

    private static (OnnxRuntimePeer? Peer, CompareRow? Skipped) CreateOrt(CompareCase c, CompareData data, int threads)
    {
        try
        {
            return (new OnnxRuntimePeer(c, data, threads), null);
        }
        catch (NotSupportedException e)
        {
            return (null, new CompareRow(c, Impl.OnnxRuntime, "cpu", "", null, double.NaN, $"not run: {e.Message}"));
        }
        catch (Microsoft.ML.OnnxRuntime.OnnxRuntimeException e)
        {
            return (null, new CompareRow(c, Impl.OnnxRuntime, "cpu", "", null, double.NaN, $"session failed: {e.Message}"));
        }
    }

    /// <summary>Largest |a − b| (NaN anywhere gives NaN).</summary>
    public static double MaxAbsDiff(float[] a, float[] b)
    {
        double max = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double d = Math.Abs((double)a[i] - b[i]);
            if (double.IsNaN(d)) return double.NaN;
            if (d > max) max = d;
        }
        return max;
    }
}
