// Turns measurements into report tables (markdown or Spectre) and into result rows (JSON/CSV), section by section.
using System.Globalization;
using FastAttention.Bench.Output;
using FastAttention.Bench.Peers;

namespace FastAttention.Bench;

/// <summary>Report tables and result rows for every section.</summary>
internal static class Report
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>The best measured fp32 FMA peak (GFLOP/s): the wider of the two vector widths that ran.</summary>
    public static double BestFma(PeakResult p) =>
        double.IsFinite(p.Avx512GFlops) ? Math.Max(p.Avx512GFlops, double.IsFinite(p.Avx2GFlops) ? p.Avx2GFlops : 0) : p.Avx2GFlops;

    public static ReportTable Header(string title, MachineInfo m, int threads, DateTimeOffset date, string command, LoadSample load)
    {
        var t = new ReportTable(title, level: 1);
        t.Bullets.Add($"Machine: {m.CpuModel}, {m.LogicalCores} logical cores, {m.Os}");
        t.Bullets.Add($"Runtime: {m.Runtime}; Vector512 accelerated: {YesNo(m.Vector512Accelerated)} " +
                      $"(AVX2: {YesNo(m.HasAvx2)}, FMA: {YesNo(m.HasFma)}, AVX-512F: {YesNo(m.HasAvx512F)})");
        t.Bullets.Add($"Threads: {threads}");
        t.Bullets.Add($"Date: {date.ToUniversalTime().ToString("yyyy-MM-dd HH:mm 'UTC'", Inv)}");
        t.Bullets.Add($"Load average at start (1, 5, 15 min): {load}");
        t.Bullets.Add($"Command: `{command}`");
        if (!m.OptimizedBuild)
        {
            t.Bullets.Add("**Warning: Debug build (JIT optimizer disabled); numbers are not representative. Use -c Release.**");
        }
        return t;
    }

    // ---------------------------------------------------------------- peak

    public static ReportTable PeakTable(PeakResult p) =>
        new ReportTable("Machine peak (measured)")
            .Cols("Ceiling", ">Value", "How")
            .Row("fp32 FMA, Vector256 (AVX2/FMA)", $"{Num(p.Avx2GFlops, "F1")} GFLOP/s", $"12 independent FMA chains per thread, {p.Threads} thread(s), best of runs")
            .Row("fp32 FMA, Vector512 (AVX-512)", $"{Num(p.Avx512GFlops, "F1")} GFLOP/s", "same, 512-bit vectors")
            .Row("DRAM read", $"{Num(p.DramGBs, "F1")} GB/s", $"sum over a large float array (huge pages where the OS allows, like the KV caches), {p.Threads} thread(s), best of runs");

    public static IEnumerable<ResultRow> PeakRows(PeakResult p)
    {
        yield return new ResultRow { Section = "peak", Case = "fma_vector256", Impl = "machine", Dtype = "fp32", Gflops = Finite(p.Avx2GFlops), Note = $"{p.Threads} thread(s)" };
        yield return new ResultRow { Section = "peak", Case = "fma_vector512", Impl = "machine", Dtype = "fp32", Gflops = Finite(p.Avx512GFlops), Note = $"{p.Threads} thread(s)" };
        yield return new ResultRow { Section = "peak", Case = "dram_read", Impl = "machine", Gbs = Finite(p.DramGBs), Note = $"{p.Threads} thread(s)" };
    }

    // ---------------------------------------------------------------- dense

    public static ReportTable DenseTable(IReadOnlyList<DenseRow> rows, PeakResult p)
    {
        var t = new ReportTable($"Dense attention forward (B={Sweeps.Batch}, H={Sweeps.Heads}, Hkv={Sweeps.KvHeads}, Sq=Sk=S, output only)")
            .Note("FLOPs = 4·B·H·Sq·Sk·D, halved for causal (FlashAttention's count). Time = median wall time of one call; min–max over the runs.")
            .Cols("dtype", ">D", ">S", "mask", ">median ms", ">min–max ms", ">runs", ">GFLOP/s", ">% AVX2 peak", ">% AVX-512 peak");
        foreach (var r in rows)
        {
            var c = r.Case;
            t.Row(c.DType, I(c.HeadDim), I(c.SeqLen), c.Causal ? "causal" : "none", Ms(r.Time.MedianMs), $"{Ms(r.Time.MinMs)}–{Ms(r.Time.MaxMs)}",
                I(r.Time.Runs), F1(r.GFlops), Pct(r.GFlops / p.Avx2GFlops), Pct(r.GFlops / p.Avx512GFlops));
        }
        return t;
    }

    public static IEnumerable<ResultRow> DenseRows(IReadOnlyList<DenseRow> rows, PeakResult p) => rows.Select(r =>
    {
        var c = r.Case;
        var s = c.Shape;
        return new ResultRow
        {
            Section = "dense", Case = $"{c.DType} D={c.HeadDim} S={c.SeqLen}{(c.Causal ? " causal" : "")}", Impl = Impl.FastAttention,
            Dtype = c.DType, Batch = s.Batch, SeqQ = s.QueryLength, SeqK = s.KeyLength, Heads = s.Heads, KvHeads = s.KvHeads, HeadDim = s.HeadDim,
            Causal = c.Causal, Flops = s.Flops(c.Causal), Gflops = r.GFlops, PctFmaPeak = Finite(r.GFlops / BestFma(p)),
        }.WithTime(r.Time);
    });

    // ---------------------------------------------------------------- sgemm

    public static ReportTable SgemmTable(IReadOnlyList<SgemmRow> rows, PeakResult p)
    {
        var t = new ReportTable("fp32 GEMM (CpuGemm.Sgemm, C = op(A)·op(B), row-major)")
            .Note("FLOPs = 2·M·N·K. Layout: N = as stored, T = transposed; NT is C = X·Wᵀ with W [N, K] (a Linear layer's weight). " +
                  "Time = median wall time of one call; min–max over the runs. B GB/s = B's bytes / time: a few-row product " +
                  "(a decode step's projection) is bound by reading B once, so compare it with the DRAM read bandwidth above.")
            .Cols("layout", ">M", ">N", ">K", ">median ms", ">min–max ms", ">runs", ">GFLOP/s", ">% AVX2 peak", ">% AVX-512 peak", ">B GB/s");
        foreach (var r in rows)
        {
            var c = r.Case;
            t.Row(c.Layout, I(c.M), I(c.N), I(c.K), Ms(r.Time.MedianMs), $"{Ms(r.Time.MinMs)}–{Ms(r.Time.MaxMs)}", I(r.Time.Runs),
                F1(r.GFlops), Pct(r.GFlops / p.Avx2GFlops), Pct(r.GFlops / p.Avx512GFlops), F1(r.BGBs));
        }
        return t;
    }

    public static IEnumerable<ResultRow> SgemmRows(IReadOnlyList<SgemmRow> rows, PeakResult p) => rows.Select(r => new ResultRow
    {
        Section = "sgemm", Case = $"{r.Case.Layout} {r.Case.M}x{r.Case.N}x{r.Case.K}", Impl = Impl.FastAttention, Dtype = "fp32",
        Params = $"layout={r.Case.Layout} M={r.Case.M} N={r.Case.N} K={r.Case.K}", Flops = r.Case.Flops, Gflops = r.GFlops,
        PctFmaPeak = Finite(r.GFlops / BestFma(p)), Bytes = 4.0 * r.Case.K * r.Case.N, Gbs = r.BGBs, PctReadPeak = Finite(r.BGBs / p.DramGBs),
    }.WithTime(r.Time));

    // ---------------------------------------------------------------- sparse

    public static ReportTable SparseTable(int seq, Measurement dense, IReadOnlyList<SparseRow> rows)
    {
        var t = new ReportTable($"Block-sparse vs dense (fp32, B={Sweeps.Batch}, H={Sweeps.Heads}, S={seq}, D={Sweeps.SparseHeadDim}, " +
                                $"blocks {Sweeps.SparseBlock}x{Sweeps.SparseBlock}, no causal)")
            .Note($"Dense (no mask) timed alone first: {Ms(dense.MedianMs)} ms (min–max {Ms(dense.MinMs)}–{Ms(dense.MaxMs)}, {dense.Runs} runs). " +
                  "Each layout then runs in alternating blocks with dense on the same inputs (\"dense ms alongside\" is dense's median in those rounds); " +
                  "ratio = median over rounds of (layout block median ÷ dense block median). Speedup = 1 / ratio. " +
                  "Overhead = ratio / density − 1: what the sparse path costs beyond the work it keeps.")
            .Cols("pattern", "parameters", ">target", ">density", ">median ms", ">min–max ms", ">dense ms alongside", ">speedup vs dense", ">overhead");
        foreach (var r in rows)
        {
            t.Row(r.Pattern, r.Parameters, F2(r.TargetDensity), r.Density.ToString("F3", Inv), Ms(r.Time.MedianMs),
                $"{Ms(r.Time.MinMs)}–{Ms(r.Time.MaxMs)}", Ms(r.Dense.MedianMs), $"{F2(r.Speedup)}x", SignedPct(r.Overhead));
        }
        return t;
    }

    public static IEnumerable<ResultRow> SparseRows(int seq, Measurement dense, IReadOnlyList<SparseRow> rows)
    {
        var shape = new AttentionShape(Sweeps.Batch, seq, seq, Sweeps.Heads, Sweeps.KvHeads, Sweeps.SparseHeadDim);
        ResultRow Base(string name, string parameters) => new()
        {
            Section = "sparse", Case = name, Impl = Impl.FastAttention, Dtype = "fp32", Batch = shape.Batch, SeqQ = seq, SeqK = seq,
            Heads = shape.Heads, KvHeads = shape.KvHeads, HeadDim = shape.HeadDim, Causal = false, Params = parameters,
        };
        yield return (Base("dense (no mask)", "no mask") with { Density = 1, Speedup = 1, Flops = shape.Flops(false) }).WithTime(dense);
        foreach (var r in rows)
        {
            yield return (Base($"{r.Pattern} {r.Parameters}", $"{r.Parameters}; target density {r.TargetDensity:F2}") with
            {
                Density = r.Density, Speedup = r.Speedup, Flops = shape.Flops(false) * r.Density,
                Note = $"overhead {SignedPct(r.Overhead)}; dense alongside {Ms(r.Dense.MedianMs)} ms, per-round ratio {r.Ratio.ToString("F4", Inv)}",
            }).WithTime(r.Time);
        }
    }

    // ---------------------------------------------------------------- decode

    public static ReportTable DecodeTable(IReadOnlyList<DecodeRow> rows, PeakResult p)
    {
        var t = new ReportTable($"Decode over KV caches (fp32, and fp16 / bf16 where marked; B = {DecodeSweeps.Batch}, H = Hkv = {DecodeSweeps.Heads}, D = {DecodeSweeps.HeadDim}, one new token)")
            .Note("Each decode run is followed by a plain parallel read (sum) of the same K/V bytes in the cache's own pools, and both start cold " +
                  "(a 256 MiB unrelated read before each, untimed); \"% of read\" is the ratio of the two medians; " +
                  "\"% DRAM peak\" compares the decode with the measured DRAM read bandwidth above.")
            .Cols("cache", ">context", ">K+V MB", ">decode ms", ">decode GB/s", ">plain read GB/s", ">% of read", ">% DRAM peak");
        foreach (var r in rows)
        {
            t.Row(r.Cache, I(r.Context), (r.Bytes / 1e6).ToString("F0", Inv), r.Decode.MedianMs.ToString("F2", Inv), F1(r.DecodeGBs),
                F1(r.ReadGBs), (r.Fraction * 100).ToString("F0", Inv) + "%", Pct(r.DecodeGBs / p.DramGBs));
        }
        return t;
    }

    public static IEnumerable<ResultRow> DecodeRows(IReadOnlyList<DecodeRow> rows, PeakResult p)
    {
        foreach (var r in rows)
        {
            var common = new ResultRow
            {
                Section = "decode", Case = $"{r.Cache} ctx={r.Context}", Impl = Impl.FastAttention, Dtype = r.Dtype, Batch = DecodeSweeps.Batch,
                SeqQ = 1, SeqK = r.Context, Heads = DecodeSweeps.Heads, KvHeads = DecodeSweeps.Heads, HeadDim = DecodeSweeps.HeadDim,
                Causal = false, Params = r.Cache, Bytes = r.Bytes,
                Flops = new AttentionShape(DecodeSweeps.Batch, 1, r.Context, DecodeSweeps.Heads, DecodeSweeps.Heads, DecodeSweeps.HeadDim).Flops(false),
            };
            yield return (common with { Gbs = r.DecodeGBs, PctReadPeak = Finite(r.DecodeGBs / p.DramGBs), Speedup = r.Fraction,
                Note = "speedup = plain read time / decode time" }).WithTime(r.Decode);
            yield return (common with { Impl = "plain-read", Flops = null, Gbs = r.ReadGBs, PctReadPeak = Finite(r.ReadGBs / p.DramGBs) }).WithTime(r.Read);
        }
    }

    // ---------------------------------------------------------------- caching

    public static ReportTable CachingTable(IReadOnlyList<CachingRow> rows)
    {
        var t = new ReportTable("Caching speedup (causal MHA layer, d_model 1024, 16 heads of 64, fp32, next-token output)")
            .Note("With a KV cache: project and attend the one new token against the cached prefix. Recompute: run the layer over prefix + 1 tokens.")
            .Cols(">prefix tokens", ">with KV cache ms", ">recompute prefix ms", ">speedup");
        foreach (var r in rows)
        {
            t.Row(I(r.Prefix), r.Cached.MedianMs.ToString("F3", Inv), r.Recompute.MedianMs.ToString("F2", Inv), r.Speedup.ToString("F1", Inv) + "x");
        }
        return t;
    }

    public static IEnumerable<ResultRow> CachingRows(IReadOnlyList<CachingRow> rows)
    {
        foreach (var r in rows)
        {
            var common = new ResultRow
            {
                Section = "caching", Case = $"prefix={r.Prefix}", Impl = Impl.FastAttention, Dtype = "fp32", Batch = 1, SeqK = r.Prefix + 1,
                Heads = 16, KvHeads = 16, HeadDim = 64, Causal = true,
            };
            yield return (common with { SeqQ = 1, Params = "kv-cache", Speedup = r.Speedup, Note = "speedup = recompute time / cached time" }).WithTime(r.Cached);
            yield return (common with { Impl = "recompute", SeqQ = r.Prefix + 1, Params = "recompute prefix" }).WithTime(r.Recompute);
        }
    }

    // ---------------------------------------------------------------- memory

    public static ReportTable MemoryTable(IReadOnlyList<MemoryRow> rows)
    {
        var t = new ReportTable($"Memory by sequence length (fp32, B = {MemorySweep.Batch}, H = Hkv = {MemorySweep.Heads}, D = {MemorySweep.HeadDim}, non-causal)")
            .Note("Measured: GC.GetTotalAllocatedBytes(precise: true) (all threads) around one call; the caller's Q, K, V, O are not counted. " +
                  "\"Scores\" = the fp32 [B, H, S, S] matrix standard attention materialises (4·B·H·S²). \"Naive\" = the measured allocation of the naive " +
                  "C# baseline (compare's peer), which materialises it. FastAttention \"first call\" = its first call at this shape in this process " +
                  "(its pooled K/V packing buffers and per-thread tile scratch are created here, unless an earlier, larger call already did); " +
                  "\"warm\" = its third call (steady state: pooled and thread-static scratch reused). GPU device-memory high-water marks: " +
                  "n/a until the CUDA attention kernels exist.")
            .Cols(">S", ">scores [B,H,S,S]", ">naive, measured", ">FastAttention first call", ">FastAttention warm", ">Q+K+V+O", ">naive ÷ FA first call");
        foreach (var r in rows)
        {
            t.Row(I(r.Seq), Bytes(r.ScoreBytes), r.NaiveBytes is { } n ? Bytes(n) : r.NaiveNote ?? "n/a", Bytes(r.FastFirstBytes),
                Bytes(r.FastWarmBytes), Bytes(r.IoBytes),
                r.NaiveBytes is { } m && r.FastFirstBytes > 0 ? Ratio((double)m / r.FastFirstBytes) : "n/a");
        }
        return t;
    }

    public static IEnumerable<ResultRow> MemoryRows(IReadOnlyList<MemoryRow> rows)
    {
        foreach (var r in rows)
        {
            var common = new ResultRow
            {
                Section = "memory", Case = $"S={r.Seq}", Impl = Impl.FastAttention, Dtype = "fp32", Batch = MemorySweep.Batch, SeqQ = r.Seq,
                SeqK = r.Seq, Heads = MemorySweep.Heads, KvHeads = MemorySweep.Heads, HeadDim = MemorySweep.HeadDim, Causal = false,
                Bytes = r.ScoreBytes,
            };
            yield return common with { Impl = Impl.Naive, Params = "materialised scores", AllocBytes = r.NaiveBytes, Note = r.NaiveNote };
            yield return common with { Params = "first call", AllocBytes = r.FastFirstBytes };
            yield return common with { Params = "warm", AllocBytes = r.FastWarmBytes };
        }
    }

    // ---------------------------------------------------------------- compare

    public static ReportTable CompareTable(IReadOnlyList<CompareRow> rows, IReadOnlySet<string> peers, PeakResult? p)
    {
        bool ort = peers.Contains(Impl.OnnxRuntime), naive = peers.Contains(Impl.Naive);
        var t = new ReportTable("FastAttention vs CPU peers (fp32, same inputs, same thread count, same process)")
            .Note("Time: median ms ± half the min–max spread. \"FA ×\" = peer time ÷ FastAttention time: how many times faster FastAttention " +
                  "is (below 1: slower). FastAttention and ONNX Runtime run in alternating blocks of back-to-back calls (FA block, ORT block, " +
                  "then ORT, FA, ...; at least 3 rounds) so both see the same load; \"FA × ORT\" is the median over rounds of the ratio of block medians. The naive baseline runs on its own; \"FA × naive\" is the ratio of medians. Throughput: prefill in GFLOP/s (4·B·H·Sq·Sk·D, halved for causal) and % of the measured FMA peak; " +
                  "decode in GB/s of K+V read and % of the measured DRAM read bandwidth. Max |Δ| = largest difference from FastAttention's output.")
            .Note("ONNX Runtime: CPU execution provider, IntraOpNumThreads = threads, one-node models built in code; non-causal and decode run " +
                  "com.microsoft MultiHeadAttention (Q [B,S,H·D], K/V [B,H,S,D]), causal runs com.microsoft GroupQueryAttention " +
                  "(its flash-style CPU path); FastAttention and ONNX Runtime are warmed up twice before timing. Naive: the [B,H,Sq,Sk] scores " +
                  "materialised on every call (one warm-up, at least three timed calls; skipped above the run's score-size budget).");
        var cols = new List<string> { "case", ">FastAttention ms", ">throughput", ">% peak" };
        if (ort) cols.AddRange([">ONNX Runtime ms", ">FA × ORT"]);
        if (naive) cols.AddRange([">naive ms", ">FA × naive"]);
        cols.Add(">max |Δ|");
        t.Cols(cols.ToArray());
        foreach (var group in rows.Where(r => r.Device == "cpu").GroupBy(r => r.Case))
        {
            var fa = group.FirstOrDefault(r => r.Impl == Impl.FastAttention);
            if (fa?.Time is not { } faTime) continue;
            var c = group.Key;
            string throughput = c.Decode ? $"{F1(fa.GBs!.Value)} GB/s" : $"{F1(fa.GFlops!.Value)} GFLOP/s";
            double pct = p is null ? double.NaN : c.Decode ? fa.GBs!.Value / p.DramGBs : fa.GFlops!.Value / BestFma(p);
            var cells = new List<string> { c.Name, MsSpread(faTime), throughput, Pct(pct) };
            var diffs = new List<string>();
            foreach (string impl in new[] { Impl.OnnxRuntime, Impl.Naive })
            {
                if (!peers.Contains(impl)) continue;
                var row = group.FirstOrDefault(r => r.Impl == impl);
                if (row?.Time is { } pt)
                {
                    cells.Add(MsSpread(pt));
                    cells.Add($"{row.PairedSpeedup ?? pt.MedianMs / faTime.MedianMs:F2}");
                    diffs.Add(row.MaxAbsDiff.ToString("0.0E0", Inv));
                }
                else
                {
                    cells.Add(row?.Note is { } note && note.StartsWith("not run", StringComparison.Ordinal) ? "not run" : "n/a");
                    cells.Add("–");
                    diffs.Add("–");
                }
            }
            cells.Add(diffs.Count > 0 ? string.Join(" / ", diffs) : "–");
            t.Row(cells.ToArray());
        }
        var skipped = rows.Where(r => r.Time is null && r.Note is not null).Select(r => $"{r.Impl}: {r.Note}").Distinct().ToList();
        foreach (string s in skipped.Take(6)) t.Note("Skipped — " + s);
        return t;
    }

    public static IEnumerable<ResultRow> CompareRows(IReadOnlyList<CompareRow> rows, PeakResult? p)
    {
        foreach (var r in rows)
        {
            var c = r.Case;
            var fa = rows.FirstOrDefault(x => x.Case == c && x.Impl == Impl.FastAttention && x.Device == r.Device);
            var row = new ResultRow
            {
                Section = "compare", Case = c.Name, Impl = r.Impl, Device = r.Device, Dtype = "fp32", Batch = c.Batch, SeqQ = c.SeqQ, SeqK = c.SeqK,
                Heads = c.Heads, KvHeads = c.KvHeads, HeadDim = c.HeadDim, Causal = c.Causal, Params = r.Detail.Length > 0 ? r.Detail : null,
                Flops = c.Flops, Bytes = c.KvBytes, Gflops = r.GFlops, Gbs = r.GBs,
                PctFmaPeak = p is null || r.GFlops is null ? null : Finite(r.GFlops.Value / BestFma(p)),
                PctReadPeak = p is null || r.GBs is null ? null : Finite(r.GBs.Value / p.DramGBs),
                Speedup = r.Impl != Impl.FastAttention && r.Time is { } t && fa?.Time is { } ft ? r.PairedSpeedup ?? t.MedianMs / ft.MedianMs : null,
                MaxAbsDiff = r.Impl == Impl.FastAttention || double.IsNaN(r.MaxAbsDiff) ? null : r.MaxAbsDiff,
                Note = r.Note,
            };
            yield return r.Time is { } time ? row.WithTime(time) : row;
        }
    }

    /// <summary>Rows merged from another tool's JSON (e.g. perf/peers/torch_sdpa.py on a GPU host), with the FastAttention ratio where one exists.</summary>
    public static ReportTable MergedTable(string source, string? tool, IReadOnlyList<ResultRow> merged, IReadOnlyList<ResultRow> ours)
    {
        var t = new ReportTable($"Merged peer results ({Path.GetFileName(source)}{(tool is null ? "" : ", " + tool)})")
            .Note("Rows read from the file, shown beside FastAttention's row of the same shape, dtype and device when this run has one. " +
                  "GPU rows have no ratio here: FastAttention's GPU timings are `bench gpu`, joined with the PyTorch GPU peers by perf/gpu/summarize.py.")
            .Cols("case", "device", "dtype", "impl", ">median ms", ">TFLOP/s", ">FastAttention ms (same device)", ">FA ×");
        foreach (var r in merged)
        {
            var fa = ours.FirstOrDefault(o => o.Impl == Impl.FastAttention && o.Device == r.Device && o.Dtype == r.Dtype && o.Batch == r.Batch &&
                o.SeqQ == r.SeqQ && o.SeqK == r.SeqK && o.Heads == r.Heads && o.KvHeads == r.KvHeads && o.HeadDim == r.HeadDim && o.Causal == r.Causal);
            string faMs = fa?.MedianMs is { } f ? Ms(f) : r.Device.StartsWith("cuda", StringComparison.Ordinal) ? "n/a (no GPU kernels yet)" : "n/a";
            string ratio = fa?.MedianMs is { } fm && r.MedianMs is { } rm ? $"{rm / fm:F2}" : "–";
            t.Row(r.Case, r.Device, r.Dtype ?? "", r.Impl, r.MedianMs is { } m ? Ms(m) : "n/a",
                r.Gflops is { } g ? (g / 1000).ToString("F1", Inv) : "n/a", faMs, ratio);
        }
        return t;
    }

    // ---------------------------------------------------------------- conditions

    public static ReportTable Conditions(RunConditions c, LoadSample start, LoadSample end)
    {
        double other = c.OtherLoad();
        var t = new ReportTable("Run conditions");
        t.Bullets.Add(string.Create(Inv, $"Wall time: {c.ElapsedSeconds:F0} s"));
        t.Bullets.Add($"Load average (1, 5, 15 min) at start: {start}; at end: {end}");
        t.Bullets.Add($"CPU taken by other processes during the run: {Pct(other)} of all cores");
        if (other > 0.05)
        {
            t.Bullets.Add("**Warning: the machine was busy with other work; peaks and timings are low and noisy. Rerun on an idle machine.**");
        }
        return t;
    }

    // ---------------------------------------------------------------- formatting

    public static string YesNo(bool b) => b ? "yes" : "no";

    public static string Num(double v, string format) => double.IsFinite(v) ? v.ToString(format, Inv) : "n/a";

    public static string Ms(double ms) => ms.ToString(ms >= 100 ? "F1" : ms >= 10 ? "F2" : "F3", Inv);

    /// <summary>"12.34 ±3%": median and half the min–max spread.</summary>
    public static string MsSpread(Measurement m) => $"{Ms(m.MedianMs)} ±{(m.Spread * 100).ToString("F0", Inv)}%";

    public static string Pct(double fraction) => double.IsFinite(fraction) ? (fraction * 100).ToString("F1", Inv) + "%" : "n/a";

    public static string SignedPct(double fraction) =>
        double.IsFinite(fraction) ? (fraction >= 0 ? "+" : "") + (fraction * 100).ToString("F1", Inv) + "%" : "n/a";

    /// <summary>Binary units: "512 B", "12.0 KiB", "128.0 MiB", "2.00 GiB".</summary>
    public static string Bytes(long b) => b switch
    {
        < 1024 => $"{b} B",
        < 1024 * 1024 => (b / 1024.0).ToString("F1", Inv) + " KiB",
        < 1024L * 1024 * 1024 => (b / 1048576.0).ToString("F1", Inv) + " MiB",
        _ => (b / 1073741824.0).ToString("F2", Inv) + " GiB",
    };

    /// <summary>"0.42x", "3.5x", "128x".</summary>
    public static string Ratio(double r) => double.IsFinite(r) ? r.ToString(r < 1 ? "F2" : r < 10 ? "F1" : "F0", Inv) + "x" : "n/a";

    private static string I(int v) => v.ToString(Inv);

    private static string F1(double v) => Num(v, "F1");

    private static string F2(double v) => Num(v, "F2");

    private static double? Finite(double v) => double.IsFinite(v) ? v : null;
}
