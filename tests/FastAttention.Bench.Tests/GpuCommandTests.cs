// The `gpu` command and the GPU-host scripts without a GPU: the "no CUDA device" path (exit 0, one line, a JSON that
// says why), --probe, argument errors; case names shared with the PyTorch peers; FLOP/byte counts; the peak-HBM
// figure; summarize.py's join on synthetic inputs; run-gpu-suite.sh's usage errors.
using System.Diagnostics;
using System.Text.Json.Nodes;
using FastAttention.Bench.Gpu;

namespace FastAttention.Bench.Tests;

[TestFixture]
public sealed class GpuCommandTests
{
    private string _dir = null!;

    [SetUp]
    public void CreateDir() => _dir = CliHarness.TempDir();

    [TearDown]
    public void DeleteDir() => Directory.Delete(_dir, recursive: true);

    private static void RequireNoDevice()
    {
        if (GpuCommand.FindDevice(out _) is not null) Assert.Ignore("A CUDA device is present: the no-device path cannot be checked here.");
    }

    [Test]
    public void WithoutADeviceItSaysSoAndExitsZero()
    {
        RequireNoDevice();
        var r = CliHarness.Run("gpu", "--quick");
        Assert.That(r.ExitCode, Is.Zero, r.Error);
        Assert.That(r.Out.Trim().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(r.Out, Does.StartWith("no CUDA device: "));
    }

    [Test]
    public void ProbeExitsThreeWithoutADevice()
    {
        RequireNoDevice();
        var r = CliHarness.Run("gpu", "--probe");
        Assert.That(r.ExitCode, Is.EqualTo(GpuCommand.NoDevice));
        Assert.That(r.Out, Does.StartWith("no CUDA device: "));
    }

    [Test]
    public void JsonWithoutADeviceSaysWhyAndHasNoRows()
    {
        RequireNoDevice();
        string file = Path.Combine(_dir, "bench.json");
        var r = CliHarness.Run("gpu", "--json", file);
        Assert.That(r.ExitCode, Is.Zero, r.Error);
        var doc = JsonNode.Parse(File.ReadAllText(file))!.AsObject();
        Assert.That((string?)doc["schema"], Is.EqualTo(GpuCommand.Schema));
        Assert.That((string?)doc["no_device"], Is.Not.Empty);
        Assert.That(doc["device"], Is.Null);
        Assert.That(doc["rows"]!.AsArray(), Is.Empty);
        Assert.That((string?)doc["mode"], Is.EqualTo("full"));
    }

    [TestCase("--only", "forward,bogus")]
    [TestCase("--only", "")]
    [TestCase("--fast")]
    public void BadArgumentsExitTwo(params string[] args)
    {
        var r = CliHarness.Run(["gpu", .. args]);
        Assert.That(r.ExitCode, Is.EqualTo(2), r.Out + r.Error);
        Assert.That(r.Error, Does.Contain("error:"));
    }

    [Test]
    public void ForwardShapesKeepTokensAndHiddenFixed()
    {
        foreach (bool quick in new[] { false, true })
        {
            var cases = GpuCases.Forward(quick);
            Assert.That(cases, Has.Count.EqualTo(GpuCases.Dtypes(quick).Count * 2 * GpuCases.ForwardSeqs(quick).Count * 2));
            foreach (var c in cases)
            {
                Assert.That(c.Batch * c.Seq, Is.EqualTo(16384), c.Name);
                Assert.That(c.Heads * c.HeadDim, Is.EqualTo(2048), c.Name);
            }
            Assert.That(cases.Select(c => c.Name), Is.Unique);
        }
        var one = new GpuForwardCase("fp16", 4, 4096, 16, 128, false);
        Assert.That(one.Name, Is.EqualTo("fwd fp16 D=128 S=4096 B=4 H=16"));
        Assert.That(one.Flops, Is.EqualTo(4.0 * 4 * 16 * 4096.0 * 4096 * 128));
        Assert.That((one with { Causal = true }).Flops, Is.EqualTo(one.Flops / 2));
    }

    [Test]
    public void SparseCaseIsTwelvePointFivePercentOfTheDenseShape()
    {
        var c = GpuCases.Sparse(quick: false)[0];
        Assert.That((c.Seq, c.Batch, c.Heads, c.HeadDim), Is.EqualTo((8192, 2, 16, 128)));
        Assert.That(c.Density, Is.EqualTo(0.125));
        Assert.That(c.Dense.Name, Is.EqualTo("fwd fp16 D=128 S=8192 B=2 H=16"));
        var mask = c.Mask();
        Assert.That(mask.Density, Is.EqualTo(0.125), "the layout the bench builds has exactly that density");
        for (int qb = 0; qb < mask.QueryBlocks; qb++)
        {
            Assert.That(Enumerable.Range(0, mask.KeyBlocks).Count(kb => mask.IsKept(0, qb, kb)), Is.EqualTo(8), $"query block {qb}");
        }
    }

    [Test]
    public void DecodeAndSoftmaxAccounting()
    {
        var d = new GpuDecodeCase(64, 1024, 32, 8, 128, 16);
        Assert.That(d.Bytes, Is.EqualTo(2.0 * 64 * 1024 * 8 * 128 * 2));
        Assert.That(d.Name, Is.EqualTo("decode fp16 D=128 H=32 Hkv=8 page=16 B=64 ctx=1024"));
        foreach (var s in GpuCases.Softmax(quick: false))
        {
            Assert.That((long)s.Batch * s.Heads * s.SeqQ * s.SeqK, Is.EqualTo(64L << 20), s.Name);
            Assert.That(s.Bytes, Is.EqualTo(2.0 * (64L << 20) * s.ElementSize), s.Name);
        }
    }

    [Test]
    public void PeakHbmFromTheDriverElseTheTable()
    {
        // H100 SXM5: 2619 MHz HBM3 clock, 5120-bit bus -> 3.35 TB/s.
        var (gbs, source) = GpuCases.PeakHbm("NVIDIA H100 80GB HBM3", 2_619_000, 5120);
        Assert.That(gbs, Is.EqualTo(3352.32).Within(1e-6));
        Assert.That(source, Does.StartWith("driver"));
        Assert.That(GpuCases.PeakHbm("NVIDIA H200", 0, 6144).Gbs, Is.EqualTo(4800));
        Assert.That(GpuCases.PeakHbm("NVIDIA H100 PCIe", 0, 5120).Gbs, Is.EqualTo(2000));
        Assert.That(GpuCases.PeakHbm("NVIDIA H100 80GB HBM3", 0, 0).Gbs, Is.EqualTo(3350));
        var unknown = GpuCases.PeakHbm("Some GPU", 0, 0);
        Assert.That(unknown.Gbs, Is.Null);
        Assert.That(unknown.Source, Does.Contain("unknown"));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void PeerCaseNamesMatchTheBench(bool quick)
    {
        string python = RequirePython();
        string[] extra = quick ? ["--quick"] : [];
        var attention = RunProcess(python, [Path.Combine(RepoRoot(), "perf", "peers", "torch_gpu_attention.py"), "--list", .. extra]);
        var expected = GpuCases.Forward(quick).Select(c => $"forward {c.Name}")
            .Concat(GpuCases.Sparse(quick).Select(c => $"sparse {c.Dense.Name}"));
        Assert.That(attention.Lines, Is.EquivalentTo(expected));
        var decode = RunProcess(python, [Path.Combine(RepoRoot(), "perf", "peers", "torch_gpu_decode.py"), "--list", .. extra]);
        Assert.That(decode.Lines, Is.EqualTo(GpuCases.Decode(quick).Select(c => $"decode {c.Name}")));
    }

    [Test]
    public void SummarizeJoinsBenchAndPeerRowsIntoRatios()
    {
        string python = RequirePython();
        string bench = Write("bench.json", """
            {"schema": "fastattention-gpu-bench/1", "mode": "quick", "date_utc": "2026-01-01T00:00:00Z", "nvrtc": "NVRTC 12.4",
             "device": {"name": "Test GPU", "sm": "sm_90", "multiprocessors": 132, "peak_hbm_gbs": 3352.3, "peak_hbm_source": "driver"},
             "kernels": [{"name": "fa_softmax_warp_f16", "arch": "sm_90", "registers": 94, "spill_bytes": 0, "stack_bytes": 0, "smem_bytes": 0}],
             "errors": [],
             "rows": [
               {"section": "forward", "case": "fwd fp16 D=128 S=4096 B=4 H=16", "impl": "fastattention", "median_ms": 1.5, "gflops": 183000.0},
               {"section": "forward", "case": "fwd fp16 D=128 S=4096 B=4 H=16", "impl": "fastattention-plain", "median_ms": 20.0},
               {"section": "forward", "case": "fwd fp16 D=64 S=1024 B=16 H=32", "impl": "fastattention", "median_ms": 0.5},
               {"section": "sparse", "case": "sparse fp16 D=128 S=8192 B=2 H=16 density=0.125", "impl": "fastattention", "median_ms": 0.9, "speedup": 6.25},
               {"section": "decode", "case": "decode fp16 D=128 H=32 Hkv=8 page=16 B=64 ctx=1024", "impl": "fastattention", "median_ms": 0.13, "gbs": 2000.0, "pct_read_peak": 0.6},
               {"section": "decode", "case": "decode fp16 D=128 H=32 Hkv=8 page=16 B=64 ctx=1024", "impl": "fastattention-plain", "median_ms": 0.3, "gbs": 900.0},
               {"section": "mha", "case": "mha fp16 d=2048 H=16 D=128 S=4096 B=4 causal: module", "impl": "fastattention", "median_ms": 3.0, "gflops": 100000.0, "speedup": 0.95},
               {"section": "softmax", "case": "softmax fp16 B=4 H=16 Sq=1024 Sk=1024", "impl": "fastattention", "median_ms": 0.1, "gbs": 2684.4, "pct_read_peak": 0.8}
             ]}
            """);
        string peer1 = Write("peer-attention.json", """
            {"schema": "fastattention-gpu-peer/1", "tool": "torch_gpu_attention.py", "device": {"name": "Test GPU"}, "errors": [],
             "rows": [{"section": "forward", "case": "fwd fp16 D=128 S=4096 B=4 H=16", "impl": "torch-sdpa-fa2", "median_ms": 3.0, "gflops": 91500.0}]}
            """);
        string peer2 = Write("peer-decode.json", """
            {"schema": "fastattention-gpu-peer/1", "tool": "torch_gpu_decode.py", "errors": ["vllm missing"],
             "rows": [{"section": "decode", "case": "decode fp16 D=128 H=32 Hkv=8 page=16 B=64 ctx=1024", "impl": "torch-sdpa-gather", "median_ms": 0.2, "gbs": 1342.2},
                      {"section": "decode", "case": "decode fp16 D=128 H=32 Hkv=8 page=16 B=64 ctx=1024", "impl": "vllm-paged-v2", "note": "not available: no vllm"}]}
            """);
        string stages = Write("stages.tsv", "tests-plain\tpassed\t12\nsanitizer\tskipped: no GPU\t0\n");
        string summary = Path.Combine(_dir, "summary.md"), merged = Path.Combine(_dir, "peer.json");
        var run = RunProcess(python, [Path.Combine(RepoRoot(), "perf", "gpu", "summarize.py"), "--bench", bench, "--peer", peer1, "--peer", peer2,
            "--peer", Path.Combine(_dir, "missing.json"), "--peer-out", merged, "--stages", stages, "--out", summary]);
        Assert.That(run.ExitCode, Is.Zero, run.Output);
        string md = File.ReadAllText(summary);
        Assert.That(md, Does.Contain("- GPU: Test GPU (sm_90, 132 SMs)"));
        Assert.That(md, Does.Contain("| fwd fp16 D=128 S=4096 B=4 H=16 | 1.500 | 183.0 | 20.000 | 3.000 | 91.5 | 2.00 |"), md);
        Assert.That(md, Does.Contain("| fwd fp16 D=64 S=1024 B=16 H=32 | 0.500 | – | – | – | – | – |"), md);
        Assert.That(md, Does.Contain("| sparse fp16 D=128 S=8192 B=2 H=16 density=0.125 | 0.900 | 6.25 | – |"), md);
        Assert.That(md, Does.Contain("| decode fp16 D=128 H=32 Hkv=8 page=16 B=64 ctx=1024 | 2000 | 60 | 900 | 1342 | not available: no vllm |"), md);
        Assert.That(md, Does.Contain("| mha fp16 d=2048 H=16 D=128 S=4096 B=4 causal: module | fastattention | 3.000 | 100.0 | 0.95 |"), md);
        Assert.That(md, Does.Contain("| softmax | softmax fp16 B=4 H=16 Sq=1024 Sk=1024 | fastattention | 0.100 | 2684 | 80 |"), md);
        Assert.That(md, Does.Contain("| fa_softmax_warp_f16 | sm_90 | 94 | 0 | 0 | 0 |"), md);
        Assert.That(md, Does.Contain("| tests-plain | passed | 12 |"), md);
        Assert.That(md, Does.Contain("missing.json: not written").And.Contain("vllm missing"), md);
        var peerDoc = JsonNode.Parse(File.ReadAllText(merged))!.AsObject();
        Assert.That(peerDoc["rows"]!.AsArray(), Has.Count.EqualTo(3));
    }

    [Test]
    public void SummarizeWithNothingStillWritesASummary()
    {
        string python = RequirePython();
        string summary = Path.Combine(_dir, "summary.md");
        var run = RunProcess(python, [Path.Combine(RepoRoot(), "perf", "gpu", "summarize.py"), "--bench", Path.Combine(_dir, "none.json"), "--out", summary]);
        Assert.That(run.ExitCode, Is.Zero, run.Output);
        Assert.That(File.ReadAllText(summary), Does.Contain("- GPU: no GPU").And.Contain("none.json: not written"));
    }

    [TestCase]
    [TestCase("only-one")]
    [TestCase("/no/such/bundle", "logs")]
    [TestCase(".", "logs", "--slow")]
    public void SuiteScriptUsageErrorsExitTwo(params string[] args)
    {
        if (!File.Exists("/bin/bash")) Assert.Ignore("No bash here.");
        var run = RunProcess("/bin/bash", [Path.Combine(RepoRoot(), "perf", "gpu", "run-gpu-suite.sh"), .. args], _dir);
        Assert.That(run.ExitCode, Is.EqualTo(2), run.Output);
        Assert.That(Directory.Exists(Path.Combine(_dir, "logs")), Is.False, "nothing written on a usage error");
    }

    private string Write(string name, string text)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    private static string RequirePython()
    {
        foreach (string candidate in new[] { "/usr/bin/python3", "/usr/local/bin/python3" })
        {
            if (File.Exists(candidate)) return candidate;
        }
        Assert.Ignore("python3 is not installed.");
        return "";
    }

    private sealed record ProcessResult(int ExitCode, string Output)
    {
        public string[] Lines => Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    }

    private static ProcessResult RunProcess(string file, string[] args, string? workingDirectory = null)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args) info.ArgumentList.Add(a);
        if (workingDirectory is not null) info.WorkingDirectory = workingDirectory;
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return new ProcessResult(process.ExitCode, stdout + stderr.Result);
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "FastAttention.sln"))) return dir.FullName;
        }
        Assert.Ignore("Not run from a source checkout.");
        return "";
    }
}
