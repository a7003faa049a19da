// `compare`: FastAttention against ONNX Runtime (CPU) and the naive baseline on the same shapes, plus merged GPU peer rows.
using FastAttention.Bench.Output;
using FastAttention.Bench.Peers;

namespace FastAttention.Bench;

internal static class CompareCommand
{
    public static int Run(CliConsole console, RunOptions o, IReadOnlySet<string> peers, IReadOnlyList<string> mergeFiles, string[] args)
    {
        // Read the merge files first: a malformed one is a bad argument, reported before any timing.
        var merged = new List<(string File, string? Tool, List<ResultRow> Rows)>();
        foreach (string file in mergeFiles)
        {
            try
            {
                var (tool, fileRows) = ResultsFile.ReadRows(File.ReadAllText(file));
                merged.Add((file, tool, fileRows.Where(r => r.Section == "compare").ToList()));
            }
            catch (FormatException e)
            {
                console.Error.WriteLine($"error: --merge-json {file}: {e.Message}");
                return ExitCodes.BadArguments;
            }
        }

        var session = new RunSession(console, o, "FastAttention vs peers", args);
        if (session.CheckBackend())
        {
            session.Warn("CUDA is usable, but this comparison is CPU-only: the GPU rows are skipped; the CPU rows follow. The GPU kernels against PyTorch are `bench gpu` with perf/peers/torch_gpu_*.py (perf/gpu/run-gpu-suite.sh runs both).");
        }
        var peak = session.MeasurePeak();
        var cases = Compare.Cases(o.Scale, o.Seqs, o.HeadDims);
        int steps = cases.Count * (1 + peers.Count);
        var rows = session.Progress.Section($"compare ({cases.Count} shapes; peers: {(peers.Count == 0 ? "none" : string.Join(", ", peers))})", steps,
            log => Compare.Run(cases, peers, o.Scale, o.Threads, session.Policy, log, session.Warn));
        session.Emit(Report.CompareTable(rows, peers, peak));
        session.Rows.AddRange(Report.CompareRows(rows, peak));

        foreach (var (file, tool, mergedRows) in merged)
        {
            session.Emit(Report.MergedTable(file, tool, mergedRows, session.Rows));
            session.Rows.AddRange(mergedRows.Select(r => r with { Note = r.Note is null ? $"merged from {Path.GetFileName(file)}" : $"{r.Note}; merged from {Path.GetFileName(file)}" }));
        }
        return session.Finish();
    }
}
