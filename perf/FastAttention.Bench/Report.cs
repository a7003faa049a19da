// Markdown report: machine header, peak table, dense attention table, block-sparse table, sgemm table.
using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Text;

namespace FastAttention.Bench;

/// <summary>What the machine is, as printed in the report header.</summary>
internal sealed record MachineInfo(string CpuModel, int LogicalCores, string Runtime, string Os, bool Vector512Accelerated, bool HasAvx512F, bool HasFma, bool OptimizedBuild)
{
    /// <summary>Reads /proc/cpuinfo (model name, family, model) and the runtime's view of the hardware.</summary>
    public static MachineInfo Detect()
    {
        string cpu = RuntimeInformation.ProcessArchitecture.ToString();
        try
        {
            if (File.Exists("/proc/cpuinfo"))
            {
                string? name = null, family = null, model = null;
                foreach (string line in File.ReadLines("/proc/cpuinfo"))
                {
                    int colon = line.IndexOf(':');
                    if (colon < 0) continue;
                    string key = line[..colon].Trim(), value = line[(colon + 1)..].Trim();
                    if (key == "model name") name ??= value;
                    else if (key == "cpu family") family ??= value;
                    else if (key == "model") model ??= value;
                    if (line.Length == 0 || (name is not null && family is not null && model is not null)) break;
                }
                if (name is not null)
                {
                    cpu = family is not null && model is not null ? $"{name} (family {family}, model {model})" : name;
                }
            }
        }
        catch (IOException)
        {
            // Keep the architecture name.
        }
        catch (UnauthorizedAccessException)
        {
            // Keep the architecture name.
        }
        bool optimized = typeof(MachineInfo).Assembly.GetCustomAttribute<DebuggableAttribute>()?.IsJITOptimizerDisabled != true;
        return new MachineInfo(cpu, Environment.ProcessorCount, RuntimeInformation.FrameworkDescription,
            RuntimeInformation.OSDescription, Vector512.IsHardwareAccelerated, Avx512F.IsSupported, Fma.IsSupported, optimized);
    }
}

/// <summary>Formats the benchmark results as markdown.</summary>
internal static class Report
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static string Header(MachineInfo m, int threads, bool full, DateTimeOffset date, string command)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# FastAttention CPU benchmark ({(full ? "full sweep" : "quick")})");
        sb.AppendLine();
        sb.AppendLine($"- Machine: {m.CpuModel}, {m.LogicalCores} logical cores, {m.Os}");
        sb.AppendLine($"- Runtime: {m.Runtime}; Vector512 accelerated: {YesNo(m.Vector512Accelerated)} " +
                      $"(AVX-512F: {YesNo(m.HasAvx512F)}, FMA: {YesNo(m.HasFma)})");
        sb.AppendLine($"- Threads: {threads}");
        sb.AppendLine($"- Date: {date.ToUniversalTime().ToString("yyyy-MM-dd HH:mm 'UTC'", Inv)}");
        sb.AppendLine($"- Command: `{command}`");
        if (!m.OptimizedBuild)
        {
            sb.AppendLine("- **Warning: Debug build (JIT optimizer disabled); numbers are not representative. Use -c Release.**");
        }
        return sb.ToString();
    }

    public static string PeakTable(PeakResult p)
    {
        var sb = new StringBuilder();
        sb.AppendLine("## Machine peak (measured)");
        sb.AppendLine();
        sb.AppendLine("| Ceiling | Value | How |");
        sb.AppendLine("|---|---:|---|");
        sb.AppendLine($"| fp32 FMA, Vector256 (AVX2/FMA) | {Num(p.Avx2GFlops, "F1")} GFLOP/s | 12 independent FMA chains per thread, {p.Threads} thread(s), best of runs |");
        sb.AppendLine($"| fp32 FMA, Vector512 (AVX-512) | {Num(p.Avx512GFlops, "F1")} GFLOP/s | same, 512-bit vectors |");
        sb.AppendLine($"| DRAM read | {Num(p.DramGBs, "F1")} GB/s | sum over a 512 MB float array, {p.Threads} thread(s), best of runs |");
        return sb.ToString();
    }

    public static string DenseTable(IReadOnlyList<DenseRow> rows, PeakResult p)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"## Dense attention forward (B={Sweeps.Batch}, H={Sweeps.Heads}, Hkv={Sweeps.KvHeads}, Sq=Sk=S, output only)");
        sb.AppendLine();
        sb.AppendLine("FLOPs = 4·B·H·Sq·Sk·D, halved for causal (FlashAttention's count). Time = median wall time of one call; min–max over the runs.");
        sb.AppendLine();
        sb.AppendLine("| dtype | D | S | mask | median ms | min–max ms | runs | GFLOP/s | % AVX2 peak | % AVX-512 peak |");
        sb.AppendLine("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            var c = r.Case;
            sb.AppendLine(string.Create(Inv,
                $"| {c.DType} | {c.HeadDim} | {c.SeqLen} | {(c.Causal ? "causal" : "none")} | {Ms(r.Time.MedianMs)} | " +
                $"{Ms(r.Time.MinMs)}–{Ms(r.Time.MaxMs)} | {r.Time.Runs} | {r.GFlops:F1} | " +
                $"{Pct(r.GFlops / p.Avx2GFlops)} | {Pct(r.GFlops / p.Avx512GFlops)} |"));
        }
        return sb.ToString();
    }

    public static string SgemmTable(IReadOnlyList<SgemmRow> rows, PeakResult p)
    {
        var sb = new StringBuilder();
        sb.AppendLine("## fp32 GEMM (CpuGemm.Sgemm, C = op(A)·op(B), row-major)");
        sb.AppendLine();
        sb.AppendLine("FLOPs = 2·M·N·K. Layout: N = as stored, T = transposed; NT is C = X·Wᵀ with W [N, K] (a Linear layer's weight). " +
                      "Time = median wall time of one call; min–max over the runs. B GB/s = B's bytes / time: a few-row product " +
                      "(a decode step's projection) is bound by reading B once, so compare it with the DRAM read bandwidth above.");
        sb.AppendLine();
        sb.AppendLine("| layout | M | N | K | median ms | min–max ms | runs | GFLOP/s | % AVX2 peak | % AVX-512 peak | B GB/s |");
        sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            var c = r.Case;
            sb.AppendLine(string.Create(Inv,
                $"| {c.Layout} | {c.M} | {c.N} | {c.K} | {Ms(r.Time.MedianMs)} | {Ms(r.Time.MinMs)}–{Ms(r.Time.MaxMs)} | {r.Time.Runs} | " +
                $"{r.GFlops:F1} | {Pct(r.GFlops / p.Avx2GFlops)} | {Pct(r.GFlops / p.Avx512GFlops)} | {r.BGBs:F1} |"));
        }
        return sb.ToString();
    }

    public static string SparseTable(Measurement dense, IReadOnlyList<SparseRow> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"## Block-sparse vs dense (fp32, B={Sweeps.Batch}, H={Sweeps.Heads}, S={Sweeps.SparseSeq}, D={Sweeps.SparseHeadDim}, " +
                      $"blocks {Sweeps.SparseBlock}x{Sweeps.SparseBlock}, no causal)");
        sb.AppendLine();
        sb.AppendLine(string.Create(Inv,
            $"Dense (no mask): {Ms(dense.MedianMs)} ms (min–max {Ms(dense.MinMs)}–{Ms(dense.MaxMs)}, {dense.Runs} runs). " +
            $"Speedup = dense time / time. Overhead = time / (density × dense time) − 1: what the sparse path costs beyond the work it keeps."));
        sb.AppendLine();
        sb.AppendLine("| pattern | parameters | target | density | median ms | min–max ms | speedup vs dense | overhead |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            sb.AppendLine(string.Create(Inv,
                $"| {r.Pattern} | {r.Parameters} | {r.TargetDensity:F2} | {r.Density:F3} | {Ms(r.Time.MedianMs)} | " +
                $"{Ms(r.Time.MinMs)}–{Ms(r.Time.MaxMs)} | {r.Speedup:F2}x | {SignedPct(r.Overhead)} |"));
        }
        return sb.ToString();
    }

    public static string DecodeTable(IReadOnlyList<DecodeRow> rows)
    {
        var sb = new System.Text.StringBuilder();
        sb.AppendLine($"### Decode over KV caches (fp32, B = {DecodeSweeps.Batch}, H = Hkv = {DecodeSweeps.Heads}, D = {DecodeSweeps.HeadDim}, one new token)");
        sb.AppendLine();
        sb.AppendLine("Each decode run is followed by a plain parallel read (sum) of the same K/V bytes; \"% of read\" is the ratio of the two medians.");
        sb.AppendLine();
        sb.AppendLine("| cache | context | K+V MB | decode ms | decode GB/s | plain read GB/s | % of read |");
        sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            sb.AppendLine(FormattableString.Invariant(
                $"| {r.Cache} | {r.Context} | {r.Bytes / 1e6:F0} | {r.Decode.MedianMs:F2} | {r.DecodeGBs:F1} | {r.ReadGBs:F1} | {r.Fraction * 100:F0}% |"));
        }
        return sb.ToString();
    }

    public static string CachingTable(IReadOnlyList<CachingRow> rows)
    {
        var sb = new System.Text.StringBuilder();
        sb.AppendLine("### Caching speedup (causal MHA layer, d_model 1024, 16 heads of 64, fp32, next-token output)");
        sb.AppendLine();
        sb.AppendLine("| prefix tokens | with KV cache ms | recompute prefix ms | speedup |");
        sb.AppendLine("|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            sb.AppendLine(FormattableString.Invariant(
                $"| {r.Prefix} | {r.Cached.MedianMs:F3} | {r.Recompute.MedianMs:F2} | {r.Speedup:F1}x |"));
        }
        return sb.ToString();
    }

    public static string Conditions(RunConditions c)
    {
        double other = c.OtherLoad();
        var sb = new StringBuilder();
        sb.AppendLine("## Run conditions");
        sb.AppendLine();
        sb.AppendLine(string.Create(Inv, $"- Wall time: {c.ElapsedSeconds:F0} s"));
        sb.AppendLine($"- CPU taken by other processes during the run: {Pct(other)} of all cores");
        if (other > 0.05)
        {
            sb.AppendLine("- **Warning: the machine was busy with other work; peaks and timings are low and noisy. Rerun on an idle machine.**");
        }
        return sb.ToString();
    }

    private static string YesNo(bool b) => b ? "yes" : "no";

    private static string Num(double v, string format) => double.IsFinite(v) ? v.ToString(format, Inv) : "n/a";

    private static string Ms(double ms) => ms.ToString(ms >= 100 ? "F1" : ms >= 10 ? "F2" : "F3", Inv);

    private static string Pct(double fraction) => double.IsFinite(fraction) ? (fraction * 100).ToString("F1", Inv) + "%" : "n/a";

    private static string SignedPct(double fraction) =>
        double.IsFinite(fraction) ? (fraction >= 0 ? "+" : "") + (fraction * 100).ToString("F1", Inv) + "%" : "n/a";
}
