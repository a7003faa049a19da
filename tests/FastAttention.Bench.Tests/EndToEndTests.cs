// Every command end to end on tiny shapes (--smoke), CPU only, checking the tables and the files they write.
using System.Text.Json.Nodes;
using FastAttention.Bench.Output;

namespace FastAttention.Bench.Tests;

[TestFixture]
[NonParallelizable]
public sealed class EndToEndTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = CliHarness.TempDir();

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, true);

    [Test]
    [CancelAfter(30_000)]
    public void InfoReportsTheMachineTheCudaLibrariesAndTheBackendChoice()
    {
        string json = Path.Combine(_dir, "info.json");
        var r = CliHarness.Run("info", "--json", json);
        Assert.That(r.ExitCode, Is.Zero, r.Error);
        Assert.That(r.Out, Does.Contain("## Machine").And.Contain("AVX2").And.Contain("FMA").And.Contain("AVX-512F"));
        Assert.That(r.Out, Does.Contain(".NET 10"));
        Assert.That(r.Out, Does.Contain("## CUDA libraries").And.Contain("driver (libcuda)").And.Contain("NVRTC").And.Contain("cuBLAS"));
        Assert.That(r.Out, Does.Contain("## GPUs").And.Contain("## Backend").And.Contain("Auto picks"));

        var o = JsonNode.Parse(File.ReadAllText(json))!.AsObject();
        Assert.That(o["schema"]!.GetValue<string>(), Is.EqualTo(InfoReport.Schema));
        Assert.That(o.Select(p => p.Key), Is.EqualTo(new[] { "schema", "command", "machine", "cuda_libraries", "gpus", "backend_auto", "onnxruntime" }));
        Assert.That(o["cuda_libraries"]!.AsArray().Select(l => l!["library"]!.GetValue<string>()), Is.EqualTo(new[] { "driver", "nvrtc", "cublas" }));
        Assert.That(o["backend_auto"]!["reason"]!.GetValue<string>(), Is.Not.Empty);
    }

    [Test]
    [CancelAfter(60_000)]
    public void MapsWritesEveryPictureTheStatisticsAndAReportLinkingThem()
    {
        var r = CliHarness.Run("maps", "--text", "Attention maps of a real model.", "--layer", "1", "--out", _dir);
        Assert.That(r.ExitCode, Is.Zero, r.Error);
        var listed = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.That(listed.Count(f => f.EndsWith(".png")), Is.GreaterThanOrEqualTo(12 + 3), "12 head heatmaps, the grid, the comparison and the charts");
        Assert.That(listed, Has.Some.EndsWith("stats.json").And.Some.EndsWith("stats.csv").And.Some.EndsWith("report.html"));
        foreach (string file in listed) Assert.That(File.Exists(file), Is.True, file);
        string report = File.ReadAllText(Path.Combine(_dir, "report.html"));
        foreach (string png in listed.Where(f => f.EndsWith(".png"))) Assert.That(report, Does.Contain(Path.GetFileName(png)), png);
    }

    [TestCase("--layer", "6")]
    [TestCase("--head", "12")]
    public void MapsRejectsOutOfRangeLayerOrHeadWithExitCode2(string option, string value)
    {
        var r = CliHarness.Run("maps", "--text", "x", "--out", _dir, option, value);
        Assert.That(r.ExitCode, Is.EqualTo(2));
        Assert.That(r.Error, Does.Contain(option));
        Assert.That(Directory.EnumerateFileSystemEntries(_dir), Is.Empty, "nothing written");
    }

    [Test]
    [CancelAfter(60_000)]
    public void BenchSmokeRunsEverySectionAndWritesMarkdownJsonAndCsv()
    {
        string json = Path.Combine(_dir, "b.json"), csv = Path.Combine(_dir, "b.csv"), md = Path.Combine(_dir, "sub", "b.md");
        var r = CliHarness.Run("bench", "--smoke", "--threads", "2", "--json", json, "--csv", csv, "--out", md);
        Assert.That(r.ExitCode, Is.Zero, r.Error);
        foreach (string heading in new[] { "# FastAttention CPU benchmark (smoke)", "## Machine peak (measured)", "## Memory by sequence length",
                     "## Dense attention forward", "## Block-sparse vs dense", "## fp32 GEMM", "## Decode over KV caches", "## Caching speedup", "## Run conditions" })
        {
            Assert.That(r.Out, Does.Contain(heading));
        }
        Assert.That(r.Error, Does.Contain("[bench] ").And.Contain("[bench] wrote"), "plain progress lines when not a terminal");
        Assert.That(File.ReadAllText(md), Is.EqualTo(r.Out), "--out holds the same markdown as stdout");

        var doc = JsonNode.Parse(File.ReadAllText(json))!.AsObject();
        var rows = doc["rows"]!.AsArray().Select(x => x!.AsObject()).ToList();
        Assert.That(rows.Select(x => x["section"]!.GetValue<string>()).Distinct(),
            Is.EquivalentTo(new[] { "peak", "memory", "dense", "sparse", "sgemm", "decode", "caching" }));
        Assert.That(doc["mode"]!.GetValue<string>(), Is.EqualTo("smoke"));
        Assert.That(doc["threads"]!.GetValue<int>(), Is.EqualTo(2));

        // Memory rows: the naive baseline allocates at least its score tensor; the bytes column is 4·B·H·S².
        var naive = rows.Where(x => x["section"]!.GetValue<string>() == "memory" && x["impl"]!.GetValue<string>() == "naive").ToList();
        Assert.That(naive, Is.Not.Empty);
        foreach (var x in naive)
        {
            int s = x["seq_q"]!.GetValue<int>();
            Assert.That(x["bytes"]!.GetValue<double>(), Is.EqualTo(4.0 * 1 * 8 * s * s));
            Assert.That(x["alloc_bytes"]!.GetValue<long>(), Is.GreaterThanOrEqualTo(4L * 8 * s * s));
        }

        // Dense rows: GFLOP/s = FLOPs / median.
        foreach (var x in rows.Where(x => x["section"]!.GetValue<string>() == "dense"))
        {
            double flops = x["flops"]!.GetValue<double>(), ms = x["median_ms"]!.GetValue<double>();
            Assert.That(x["gflops"]!.GetValue<double>(), Is.EqualTo(flops / (ms * 1e-3) / 1e9).Within(1e-9).Percent);
        }

        var lines = File.ReadAllLines(csv);
        Assert.That(lines[0], Is.EqualTo(string.Join(',', SchemaTests.GoldenRowFields)));
        Assert.That(lines, Has.Length.EqualTo(rows.Count + 1), "one CSV line per JSON row");
    }

    [Test]
    [CancelAfter(60_000)]
    public void CompareSmokeRunsBothPeersOnTheSameShapesAndTheyAgree()
    {
        string json = Path.Combine(_dir, "c.json"), csv = Path.Combine(_dir, "c.csv");
        var r = CliHarness.Run("compare", "--smoke", "--json", json, "--csv", csv);
        Assert.That(r.ExitCode, Is.Zero, r.Error);
        Assert.That(r.Out, Does.Contain("## FastAttention vs CPU peers").And.Contain("FA × ORT").And.Contain("FA × naive"));

        var rows = ResultsFile.ReadRows(File.ReadAllText(json)).Rows.Where(x => x.Section == "compare").ToList();
        var cases = rows.Select(x => x.Case).Distinct().ToList();
        Assert.That(cases, Has.Count.EqualTo(5), "2 lengths x (non-causal, causal) + 1 decode");
        foreach (string c in cases)
        {
            var fa = rows.Single(x => x.Case == c && x.Impl == "fastattention");
            Assert.That(fa.MedianMs, Is.GreaterThan(0));
            foreach (string peer in new[] { "onnxruntime", "naive" })
            {
                var p = rows.Single(x => x.Case == c && x.Impl == peer);
                Assert.That(p.MedianMs, Is.GreaterThan(0), $"{peer} ran on {c}: {p.Note}");
                Assert.That(p.MaxAbsDiff, Is.LessThan(1e-5), $"{peer} computes the same attention as FastAttention on {c}");
                if (peer == "naive")
                {
                    Assert.That(p.Speedup, Is.EqualTo(p.MedianMs!.Value / fa.MedianMs!.Value).Within(1e-9).Percent, "speedup = peer ÷ FastAttention time");
                }
                else
                {
                    // Alternating blocks: the median of per-round ratios lies between the extreme ratios.
                    Assert.That(p.Speedup, Is.InRange(p.MinMs!.Value / fa.MaxMs!.Value, p.MaxMs!.Value / fa.MinMs!.Value));
                    Assert.That(p.Runs, Is.GreaterThanOrEqualTo(Runner.MinRounds), "at least one timed call per round");
                    Assert.That(fa.Runs, Is.GreaterThanOrEqualTo(Runner.MinRounds));
                }
            }
        }
        Assert.That(rows.Where(x => x.Impl == "onnxruntime" && x.Causal == true).Select(x => x.Params).Distinct(),
            Is.EqualTo(new[] { "com.microsoft GroupQueryAttention" }));
        Assert.That(rows.Where(x => x.Impl == "onnxruntime" && x.Causal == false).Select(x => x.Params).Distinct(),
            Is.EqualTo(new[] { "com.microsoft MultiHeadAttention" }));
    }

    [Test]
    [CancelAfter(30_000)]
    public void AnUnavailableCudaBackendIsReportedAndTheCpuRowsStillRun()
    {
        string json = Path.Combine(_dir, "c.json");
        var r = CliHarness.Run("compare", "--smoke", "--backend", "cuda", "--peers", "none", "--json", json);
        Assert.That(r.ExitCode, Is.Zero, r.Error);
        // Here: no CUDA driver. On a GPU host: CUDA usable, but compare is CPU-only (the GPU rows are in `bench gpu`). Either way one clear warning.
        Assert.That(r.Error, Does.Contain("warning:").And.Contain("GPU rows are skipped; the CPU rows follow"));
        var doc = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.That(doc["messages"]!.AsArray().Select(m => m!.GetValue<string>()), Has.Some.Contains("GPU rows are skipped"));
        Assert.That(doc["rows"]!.AsArray().Count(x => x!["impl"]!.GetValue<string>() == "fastattention"), Is.EqualTo(5));
    }

    [Test]
    [CancelAfter(30_000)]
    public void CompareMergesAPeerJsonIntoTheTableAndTheOutputFiles()
    {
        string torch = Path.Combine(_dir, "torch.json"), json = Path.Combine(_dir, "c.json");
        // What perf/peers/torch_sdpa.py writes (schema fastattention-bench/1), one GPU row and one CPU row whose shape this run has.
        File.WriteAllText(torch, """
            {
              "schema": "fastattention-bench/1",
              "tool": "perf/peers/torch_sdpa.py (torch 2.5.1, CUDA 12.4)",
              "command": "python3 perf/peers/torch_sdpa.py --quick",
              "rows": [
                { "section": "compare", "case": "prefill B=1 H=8 D=64 S=1024", "impl": "torch-sdpa", "device": "cuda:0 NVIDIA H100 80GB HBM3",
                  "dtype": "fp16", "batch": 1, "seq_q": 1024, "seq_k": 1024, "heads": 8, "kv_heads": 8, "head_dim": 64, "causal": false,
                  "median_ms": 0.05, "min_ms": 0.049, "max_ms": 0.06, "runs": 20, "flops": 2147483648, "gflops": 42949.67 },
                { "section": "compare", "case": "prefill B=1 H=8 D=16 S=32", "impl": "torch-sdpa", "device": "cpu",
                  "dtype": "fp32", "batch": 1, "seq_q": 32, "seq_k": 32, "heads": 8, "kv_heads": 8, "head_dim": 16, "causal": false,
                  "median_ms": 0.5, "runs": 20, "flops": 524288, "gflops": 1.05 },
                { "section": "peak", "case": "ignored", "impl": "machine" }
              ]
            }
            """);
        var r = CliHarness.Run("compare", "--smoke", "--peers", "none", "--merge-json", torch, "--json", json);
        Assert.That(r.ExitCode, Is.Zero, r.Error);
        Assert.That(r.Out, Does.Contain("## Merged peer results (torch.json, perf/peers/torch_sdpa.py (torch 2.5.1, CUDA 12.4))"));
        Assert.That(r.Out, Does.Contain("| prefill B=1 H=8 D=64 S=1024 | cuda:0 NVIDIA H100 80GB HBM3 | fp16 | torch-sdpa | 0.050 | 42.9 | n/a (no GPU kernels yet) | – |"));
        Assert.That(r.Out, Does.Match(@"\| prefill B=1 H=8 D=16 S=32 \| cpu \| fp32 \| torch-sdpa \| 0\.500 \| 0\.0 \| [0-9.]+ \| [0-9.]+ \|"),
            "a CPU row with the same shape gets FastAttention's time and the ratio");
        var rows = ResultsFile.ReadRows(File.ReadAllText(json)).Rows;
        var merged = rows.Where(x => x.Impl == "torch-sdpa").ToList();
        Assert.That(merged, Has.Count.EqualTo(2), "only compare rows are merged");
        Assert.That(merged.All(x => x.Note!.Contains("merged from torch.json")));
    }

    [Test]
    [CancelAfter(60_000)]
    public void TheDefaultWithNoArgumentsIsTheQuickBench()
    {
        // Not run here (about a minute); its parse is: bench --quick with every section.
        Assert.That(Cli.Normalise([]), Is.EqualTo(new[] { "bench", "--quick" }));
        var r = CliHarness.Run("bench", "--smoke", "--only", "dense", "--seq", "40", "--head-dim", "8", "--dtype", "fp16,bf16");
        Assert.That(r.ExitCode, Is.Zero, r.Error);
        Assert.That(r.Out, Does.Contain("| fp16 | 8 | 40 | none |").And.Contain("| bf16 | 8 | 40 | causal |"));
        Assert.That(r.Out, Does.Not.Contain("## Memory"), "--only limits the sections");
    }
}
