// FLOP and byte accounting against hand-computed values; timing statistics; the naive baseline's semantics and allocation.
using System.Numerics.Tensors;
using FastAttention.Bench.Peers;
using FastAttention.Cpu;

namespace FastAttention.Bench.Tests;

[TestFixture]
public sealed class AccountingTests
{
    [Test]
    public void AttentionFlopsAreFlashAttentionsCountHalvedForCausal()
    {
        // 4 · B · H · Sq · Sk · D = 4 · 2 · 4 · 128 · 128 · 64 = 33,554,432
        var c = new CompareCase(false, 2, 128, 128, 4, 4, 64, false);
        Assert.That(c.Flops, Is.EqualTo(33_554_432d));
        Assert.That((c with { Causal = true }).Flops, Is.EqualTo(16_777_216d));
        // Dense sweep: B = 1, H = 8, S = 1024, D = 64: 4 · 8 · 1024² · 64 = 2,147,483,648
        Assert.That(new DenseCase("fp32", 64, 1024, false).Shape.Flops(false), Is.EqualTo(2_147_483_648d));
    }

    [Test]
    public void DecodeBytesAreKPlusVInFp32()
    {
        // 2 (K and V) · 4 bytes · B 8 · ctx 1024 · Hkv 8 · D 128 = 67,108,864
        var c = new CompareCase(true, 8, 1, 1024, 8, 8, 128, false);
        Assert.That(c.KvBytes, Is.EqualTo(67_108_864d));
        Assert.That(c.Flops, Is.EqualTo(4.0 * 8 * 8 * 1 * 1024 * 128));
        var row = new CompareRow(c, Impl.FastAttention, "cpu", "", new Measurement(4, 3, 5, 5), 0, null);
        Assert.That(row.GBs, Is.EqualTo(67_108_864 / 4e-3 / 1e9).Within(1e-12));
        Assert.That(row.GFlops, Is.EqualTo(4.0 * 8 * 8 * 1024 * 128 / 4e-3 / 1e9).Within(1e-12));
    }

    [Test]
    public void ThroughputFiguresDivideByTheMedian()
    {
        var dense = new DenseRow(new DenseCase("fp32", 64, 1024, true), new Measurement(MedianMs: 10, MinMs: 9, MaxMs: 12, Runs: 5));
        Assert.That(dense.GFlops, Is.EqualTo(1_073_741_824 / 0.010 / 1e9).Within(1e-12));   // 107.37 GFLOP/s
        var gemm = new SgemmRow(new SgemmCase(1, 4096, 4096, "NT"), new Measurement(2, 2, 2, 3));
        Assert.That(gemm.GFlops, Is.EqualTo(2.0 * 4096 * 4096 / 0.002 / 1e9).Within(1e-12));
        Assert.That(gemm.BGBs, Is.EqualTo(4.0 * 4096 * 4096 / 0.002 / 1e9).Within(1e-12));  // 33.55 GB/s of B
        var decode = new DecodeRow("contiguous", 1024, 67_108_864, new Measurement(4, 4, 4, 1), new Measurement(2, 2, 2, 1));
        Assert.That(decode.DecodeGBs, Is.EqualTo(16.777216).Within(1e-12));
        Assert.That(decode.Fraction, Is.EqualTo(0.5));
        // The row's figures come from the per-round ratio, not from the two medians (here 30/100 vs 0.32).
        var sparse = new SparseRow("Local", "w", 0.25, 0.25, new Measurement(30, 30, 30, 1), new Measurement(100, 100, 100, 1), Ratio: 0.32);
        Assert.That(sparse.Speedup, Is.EqualTo(1 / 0.32).Within(1e-12));
        Assert.That(sparse.Overhead, Is.EqualTo(0.32 / 0.25 - 1).Within(1e-12));
    }

    [Test]
    public void PercentOfPeakUsesTheWiderMeasuredFmaPeak()
    {
        Assert.That(Report.BestFma(new PeakResult(100, 180, 20, 2)), Is.EqualTo(180));
        Assert.That(Report.BestFma(new PeakResult(100, double.NaN, 20, 2)), Is.EqualTo(100));
        var rows = Report.DenseRows([new DenseRow(new DenseCase("fp32", 64, 1024, false), new Measurement(21.47483648, 20, 23, 5))],
            new PeakResult(100, 200, 20, 2)).ToList();
        Assert.That(rows[0].Gflops, Is.EqualTo(100).Within(1e-9));
        Assert.That(rows[0].PctFmaPeak, Is.EqualTo(0.5).Within(1e-12));
        Assert.That(rows[0].Spread, Is.EqualTo(3 / (2 * 21.47483648)).Within(1e-12));
    }

    [Test]
    public void MedianAndSpread()
    {
        Assert.That(Runner.Summarise([5, 1, 3]), Is.EqualTo(new Measurement(3, 1, 5, 3)));
        Assert.That(Runner.Summarise([4, 1, 3, 2]).MedianMs, Is.EqualTo(2.5));
        Assert.That(new Measurement(10, 8, 14, 4).Spread, Is.EqualTo(0.3).Within(1e-12));
    }

    [Test]
    [NonParallelizable]
    public void AlternatingBlocksTimeBothActionsAlikeAndReportTheMedianRatio()
    {
        int a = 0, b = 0;
        var policy = new RunPolicy(WarmUps: 2, MinRuns: 3, MinSeconds: 0, MaxRuns: 50);
        // 60 ms calls: no untimed lead-in call, blocks of one call, exactly MinRounds rounds.
        var (ta, tb, ratio) = Runner.MeasureAlternating(() => { a++; Thread.Sleep(60); }, () => { b++; Thread.Sleep(180); }, policy);
        Assert.That(ta.Runs, Is.EqualTo(Runner.MinRounds));
        Assert.That(tb.Runs, Is.EqualTo(Runner.MinRounds));
        Assert.That(a, Is.EqualTo(policy.WarmUps + Runner.MinRounds), "warm-ups plus one call per round");
        Assert.That(b, Is.EqualTo(policy.WarmUps + Runner.MinRounds));
        Assert.That(ratio, Is.InRange(tb.MinMs / ta.MaxMs, tb.MaxMs / ta.MinMs));
        Assert.That(ratio, Is.GreaterThan(1.5), "180 ms sleeps against 60 ms sleeps");

        // 5 ms calls: an untimed call starts each block, blocks of ceil(50 / 5) = 10 calls or so.
        a = 0;
        var (fast, _, _) = Runner.MeasureAlternating(() => { a++; Thread.Sleep(5); }, () => Thread.Sleep(5), policy);
        Assert.That(fast.Runs, Is.GreaterThanOrEqualTo(Runner.MinRounds * 2));
        Assert.That(a, Is.EqualTo(policy.WarmUps + Runner.MinRounds + fast.Runs), "one untimed lead-in call per block");
    }

    [Test]
    public void ScoreBytesAreFourTimesBHSqSk()
    {
        Assert.That(NaiveAttention.ScoreBytes(1, 8, 1024, 1024), Is.EqualTo(33_554_432L));   // 32 MiB
        Assert.That(NaiveAttention.ScoreBytes(1, 8, 16384, 16384), Is.EqualTo(8_589_934_592L)); // 8 GiB
        Assert.That(NaiveAttention.Fits(1, 8, 16384, 16384), Is.False, "2^31 elements exceed a .NET array");
    }

    [Test]
    [NonParallelizable]
    public void TheNaiveBaselineAllocatesItsScoreMatrixAndMatchesFastAttention()
    {
        // GQA (H 4, Hkv 2), causal, Sq < Sk (bottom-right aligned): the semantics the engine documents.
        const int b = 2, sq = 17, sk = 29, h = 4, hkv = 2, d = 24;
        var c = new CompareCase(false, b, sq, sk, h, hkv, d, true);
        var data = CompareData.Create(c, seed: 5);
        var naive = new float[data.Q.Length];
        var fast = new float[data.Q.Length];
        NaiveAttention.Forward(data.Q, data.K, data.V, naive, b, sq, sk, h, hkv, d, causal: true, threads: 2);
        CpuAttention.Forward<float>(new ReadOnlyTensorSpan<float>(data.Q, [b, sq, h, d], default),
            new ReadOnlyTensorSpan<float>(data.K, [b, sk, hkv, d], default), new ReadOnlyTensorSpan<float>(data.V, [b, sk, hkv, d], default),
            new TensorSpan<float>(fast, [b, sq, h, d], default), new AttentionOptions { Mask = AttentionMask.CausalMask });
        Assert.That(Compare.MaxAbsDiff(fast, naive), Is.LessThan(1e-5));

        long scores = NaiveAttention.ScoreBytes(b, h, sq, sk);
        long allocated = MemorySweep.Allocated(() =>
            NaiveAttention.Forward(data.Q, data.K, data.V, naive, b, sq, sk, h, hkv, d, causal: true, threads: 2));
        Assert.That(allocated, Is.InRange(scores, scores + 64 * 1024), "the score tensor plus a little bookkeeping");
    }

    [Test]
    public void CaseNamesMatchThoseOfTheTorchScript()
    {
        // perf/peers/torch_sdpa.py builds the same names (case_name); merged rows line up by shape fields, names help readers.
        Assert.That(new CompareCase(false, 1, 1024, 1024, 8, 8, 64, true).Name, Is.EqualTo("prefill B=1 H=8 D=64 S=1024 causal"));
        Assert.That(new CompareCase(true, 8, 1, 4096, 8, 8, 128, false).Name, Is.EqualTo("decode B=8 H=8 D=128 ctx=4096"));
        string script = File.ReadAllText(Path.Combine(RepoRoot(), "perf", "peers", "torch_sdpa.py"));
        Assert.That(script, Does.Contain("f\"decode B={batch} H={heads} D={head_dim} ctx={seq_k}\""));
        Assert.That(script, Does.Contain("f\"prefill B={batch} H={heads} D={head_dim} S={seq_q}{' causal' if causal else ''}\""));
        foreach (string field in SchemaTests.GoldenRowFields) Assert.That(script, Does.Contain($"\"{field}\""), field);
    }

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "FastAttention.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new DirectoryNotFoundException("FastAttention.sln not found above " + AppContext.BaseDirectory);
    }
}
