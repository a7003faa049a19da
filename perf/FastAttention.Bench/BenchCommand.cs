// `bench`: the measured peak, then memory, the dense sweep, block-sparse vs dense, sgemm, decode bandwidth and caching speedup;
// then, where a CUDA device is usable, the `gpu` command's sections.
using FastAttention.Bench.Output;

namespace FastAttention.Bench;

internal static class BenchCommand
{
    public static int Run(CliConsole console, RunOptions o, IReadOnlySet<string> sections, IReadOnlyList<string>? dtypes, string[] args)
    {
        var session = new RunSession(console, o, "FastAttention CPU benchmark", args);
        bool gpu = session.CheckBackend();
        var peak = session.MeasurePeak();
        var policy = session.Policy;
        int threads = o.Threads;

        if (sections.Contains("memory"))
        {
            var lengths = MemorySweep.Lengths(o.Scale);
            var rows = session.Progress.Section("memory by sequence length", o.Seqs?.Count ?? lengths.Length,
                log => MemorySweep.Run(o.Scale, o.Seqs, threads, log));
            session.Emit(Report.MemoryTable(rows));
            session.Rows.AddRange(Report.MemoryRows(rows));
        }

        if (sections.Contains("dense"))
        {
            var cases = Sweeps.DenseCases(o.Scale, o.Seqs, o.HeadDims, dtypes);
            var rows = session.Progress.Section($"dense attention ({cases.Count} cases)", cases.Count,
                log => Sweeps.RunDense(cases, threads, policy, log));
            session.Emit(Report.DenseTable(rows, peak));
            session.Rows.AddRange(Report.DenseRows(rows, peak));
        }

        if (sections.Contains("sparse"))
        {
            // The sparse path's fixed per-call cost grows with S while the kept work grows with S², so
            // --seq shows the overhead at several lengths.
            IReadOnlyList<int> seqs = o.Scale == RunScale.Smoke ? [Sweeps.SmokeSparseSeq] : o.Seqs ?? [Sweeps.SparseSeq];
            foreach (int seq in seqs)
            {
                var (dense, rows) = session.Progress.Section($"block-sparse vs dense, S={seq}", 2 + 3 * Sweeps.SparseDensities.Length,
                    log => Sweeps.RunSparse(seq, threads, policy, log));
                session.Emit(Report.SparseTable(seq, dense, rows));
                session.Rows.AddRange(Report.SparseRows(seq, dense, rows));
            }
        }

        if (sections.Contains("sgemm"))
        {
            var cases = Sweeps.SgemmCases(o.Scale);
            var rows = session.Progress.Section($"sgemm ({cases.Count} cases)", cases.Count, log => Sweeps.RunSgemm(cases, threads, policy, log));
            session.Emit(Report.SgemmTable(rows, peak));
            session.Rows.AddRange(Report.SgemmRows(rows, peak));
        }

        if (sections.Contains("decode"))
        {
            var rows = session.Progress.Section("decode over KV caches", 2 * DecodeSweeps.Contexts(o.Scale).Length,
                log => DecodeSweeps.RunBandwidth(o.Scale, threads, policy, log));
            session.Emit(Report.DecodeTable(rows, peak));
            session.Rows.AddRange(Report.DecodeRows(rows, peak));
        }

        if (sections.Contains("caching"))
        {
            var rows = session.Progress.Section("caching speedup", DecodeSweeps.Prefixes(o.Scale).Length,
                log => DecodeSweeps.RunCaching(o.Scale, threads, policy, log));
            session.Emit(Report.CachingTable(rows));
            session.Rows.AddRange(Report.CachingRows(rows));
        }
        int status = session.Finish();
        if (gpu)
        {
            // The GPU part of the main job: the `gpu` command's sections (quick unless the run is the full one).
            console.Out.WriteLine();
            int gpuStatus = Gpu.GpuCommand.Run(console, o.Scale != RunScale.Full, probe: false, jsonFile: null,
                Gpu.GpuCommand.Sections.ToHashSet(), args);
            if (status == ExitCodes.Ok) status = gpuStatus;
        }
        return status;
    }
}
