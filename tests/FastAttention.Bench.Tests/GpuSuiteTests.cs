// run-gpu-suite.sh's control flow without a GPU, on a fake bundle (a shell `dotnet` that answers the probe as told,
// fake nvidia-smi / compute-sanitizer / python3 on PATH): a listed but unusable GPU fails the suite with the probe's
// reason after trying the Python environment's NVRTC; a sanitizer that cannot run is skipped, not failed, while a test
// failing under it is a finding; the Nsight Compute profile runs only when asked for; the suite budget cuts the stages.
// Also `gpu --warm` and GpuWarm.CompileAll (NVRTC, no GPU): the disk cache is reused.
using System.Diagnostics;
using FastAttention.Bench.Gpu;
using FastAttention.Compilation;

namespace FastAttention.Bench.Tests;

[TestFixture]
public sealed class GpuSuiteTests
{
    private string _dir = null!;

    [SetUp]
    public void CreateDir() => _dir = CliHarness.TempDir();

    [TearDown]
    public void DeleteDir() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void WarmWithoutADeviceSaysSoAndExitsZero()
    {
        if (GpuCommand.FindDevice(out _) is not null) Assert.Ignore("A CUDA device is present.");
        var r = CliHarness.Run("gpu", "--warm");
        Assert.That(r.ExitCode, Is.Zero, r.Error);
        Assert.That(r.Out, Does.StartWith("no CUDA device: "));
    }

    [Test]
    public void WarmAndProbeTogetherAreAUsageError()
    {
        var r = CliHarness.Run("gpu", "--warm", "--probe");
        Assert.That(r.ExitCode, Is.EqualTo(2));
        Assert.That(r.Error, Does.Contain("--warm and --probe"));
    }

    [Test]
    public void CompileAllFillsTheDiskCacheThatALaterProcessReads()
    {
        if (!NvrtcInfo.TryGetCurrent(out _, out string why)) Assert.Ignore($"No NVRTC: {why}");
        KernelSpecialization[] specs = [KernelRegistry.Utility(KernelElementType.Float32), KernelRegistry.Utility(KernelElementType.Float16)];
        CompileTarget target = CompileTarget.Cubin(new(8, 0));
        var first = GpuWarm.CompileAll(new KernelCompiler(new KernelCache(_dir)), specs, target, 2);
        Assert.That(first.Compiled, Is.EqualTo(2));
        Assert.That(first.Kernels, Is.Not.Empty);
        Assert.That(first.Kernels.Select(k => k.KernelName), Is.Ordered.Using((IComparer<string>)StringComparer.Ordinal));
        Assert.That(first.Kernels.Select(k => k.KernelName), Is.EquivalentTo(specs.SelectMany(s => s.KernelNames)));

        // A fresh compiler on the same folder (what the next process of the suite is) runs NVRTC zero times, and the
        // cached logs give the same ptxas report.
        var cache = new KernelCache(_dir);
        var second = GpuWarm.CompileAll(new KernelCompiler(cache), specs, target, 2);
        Assert.That(second.Compiled, Is.Zero);
        Assert.That(cache.DiskHits, Is.EqualTo(2));
        Assert.That(second.Kernels, Is.EqualTo(first.Kernels));
        Assert.That(() => GpuWarm.CompileAll(new KernelCompiler(cache), specs, target, 0), Throws.TypeOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void AListedGpuThatTheProbeCannotUseFailsTheSuiteWithTheReason()
    {
        string nvrtc = Path.Combine(_dir, "py", "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.12");
        Directory.CreateDirectory(Path.GetDirectoryName(nvrtc)!);
        File.WriteAllText(nvrtc, "");
        var run = RunSuite(probeRc: 3, sanitizer: null, ("PYTHONPATH", Path.Combine(_dir, "py")));
        Assert.That(run.ExitCode, Is.EqualTo(1), run.Output);
        string suite = File.ReadAllText(Path.Combine(_dir, "logs", "suite.log"));
        Assert.That(suite, Does.Contain($"FASTATTN_NVRTC_PATH={nvrtc} (from the Python environment)"));
        Assert.That(suite, Does.Contain("a GPU is listed (nvidia-smi -L) but not usable: no CUDA device: fake reason"));
        Assert.That(File.ReadAllText(Path.Combine(_dir, "logs", "env.txt")), Does.Contain("--- gpu --probe (exit 3)"), "probed twice, both logged");
        Assert.That(Stage(suite, "warm"), Is.EqualTo("skipped: no GPU"));
    }

    [Test]
    public void ASanitizerThatCannotRunIsSkippedWithItsReason()
    {
        var run = RunSuite(probeRc: 0, sanitizer: "echo 'Error: Target application is not supported'; exit 1");
        Assert.That(run.ExitCode, Is.Zero, run.Output);
        string suite = File.ReadAllText(Path.Combine(_dir, "logs", "suite.log"));
        Assert.That(Stage(suite, "warm"), Is.EqualTo("passed"));
        Assert.That(Stage(suite, "sanitizer"), Does.StartWith("skipped: the check under compute-sanitizer did not run (exit 1: Error: Target application is not supported"));
        Assert.That(suite, Does.Not.Contain("sanitizer-memcheck"));
    }

    [Test]
    public void ASanitizerFindingInTheCheckFailsTheSuite()
    {
        var run = RunSuite(probeRc: 0, sanitizer: "echo '========= Invalid __global__ read'; exit 3");
        Assert.That(run.ExitCode, Is.EqualTo(1), run.Output);
        Assert.That(Stage(File.ReadAllText(Path.Combine(_dir, "logs", "suite.log")), "sanitizer-check"), Is.EqualTo("failed (exit 3)"));
    }

    [Test]
    public void AWorkingSanitizerRunsTheCheckThenMemcheckAndRacecheck()
    {
        var run = RunSuite(probeRc: 0, sanitizer: "exit 0");
        Assert.That(run.ExitCode, Is.Zero, run.Output);
        string suite = File.ReadAllText(Path.Combine(_dir, "logs", "suite.log"));
        foreach (string stage in new[] { "sanitizer-check", "sanitizer-memcheck", "sanitizer-racecheck", "bench", "tests-plain", "tests-rest" })
        {
            Assert.That(Stage(suite, stage), Is.EqualTo("passed"), stage);
        }
        Assert.That(suite, Does.Contain("stage tests-rest: start (cap 87s)"), "the default full caps");
    }

    [Test]
    public void ATestFailingUnderTheSanitizerIsAFindingAndTheSubsetStillRuns()
    {
        // The tool ran the check's test host (it printed its run summary), and a test failed: not "cannot run".
        var run = RunSuite(probeRc: 0, sanitizer: """case "$*" in *UtilityKernelsMatchTheCpu*) echo "Test run summary: Failed! - fake"; exit 2;; esac; exit 0""");
        Assert.That(run.ExitCode, Is.EqualTo(1), run.Output);
        string suite = File.ReadAllText(Path.Combine(_dir, "logs", "suite.log"));
        Assert.That(Stage(suite, "sanitizer-check"), Is.EqualTo("failed (exit 2)"));
        Assert.That(Stage(suite, "sanitizer-memcheck"), Is.EqualTo("passed"));
        Assert.That(Stage(suite, "sanitizer-racecheck"), Is.EqualTo("passed"));
    }

    [Test]
    public void TheProfileStageRunsNcuOnTheChosenKernelsOnlyWhenAskedFor()
    {
        var quiet = RunSuite(probeRc: 0, sanitizer: "exit 0");
        Assert.That(quiet.ExitCode, Is.Zero, quiet.Output);
        Assert.That(File.ReadAllText(Path.Combine(_dir, "logs", "suite.log")), Does.Not.Contain("stage profile"), "no profile unless asked for");

        var noNcu = RunSuite(probeRc: 0, sanitizer: "exit 0", ("PROFILE_KERNELS", "fa_paged_decode_hd128_f16"));
        Assert.That(Stage(File.ReadAllText(Path.Combine(_dir, "logs", "suite.log")), "profile"), Is.EqualTo("skipped: ncu not found"), noNcu.Output);

        Directory.CreateDirectory(Path.Combine(_dir, "bin"));
        Script(Path.Combine(_dir, "bin", "ncu"), "echo \"fake ncu $*\"");
        var run = RunSuite(probeRc: 0, sanitizer: "exit 0", ("PROFILE_KERNELS", "fa_paged_decode_hd128_f16"), ("SUITE_BUDGET", "540"));
        Assert.That(run.ExitCode, Is.Zero, run.Output);
        Assert.That(Stage(File.ReadAllText(Path.Combine(_dir, "logs", "suite.log")), "profile"), Is.EqualTo("passed"));
        string profile = File.ReadAllText(Path.Combine(_dir, "logs", "profile.txt"));
        Assert.That(profile, Does.Contain("--kernel-name regex:fa_paged_decode_hd128_f16 --launch-skip 3 --launch-count 2"));
        Assert.That(profile, Does.Contain("gpu --quick --only decode"));
    }

    [Test]
    public void TheBudgetSkipsStagesThatNoLongerFit()
    {
        // 24 s budget less the summary's 15 s leaves 9 s: the warm stage (6 s) fits, nothing after it does.
        var run = RunSuite(probeRc: 0, sanitizer: "exit 0", ("SUITE_BUDGET", "24"), ("CAP_WARM", "8"), ("FAKE_SLEEP_WARM", "6"));
        string suite = File.ReadAllText(Path.Combine(_dir, "logs", "suite.log"));
        Assert.That(Stage(suite, "warm"), Is.EqualTo("passed"));
        foreach (string stage in new[] { "tests-plain", "tests-rest", "bench", "sanitizer-check" })
        {
            Assert.That(Stage(suite, stage), Does.StartWith("skipped: suite budget of 24s spent"), stage);
        }
        Assert.That(run.ExitCode, Is.Zero, run.Output);
    }

    private static string Stage(string suiteLog, string name)
    {
        var line = suiteLog.Split('\n').LastOrDefault(l => l.Contains($"] stage {name}: ") && !l.Contains(": start (cap"));
        Assert.That(line, Is.Not.Null, $"no result for stage {name} in:\n{suiteLog}");
        string verdict = line![(line.IndexOf($"stage {name}: ", StringComparison.Ordinal) + $"stage {name}: ".Length)..];
        int after = verdict.LastIndexOf(" after ", StringComparison.Ordinal);
        return after >= 0 && !verdict.StartsWith("skipped", StringComparison.Ordinal) ? verdict[..after] : verdict;
    }

    /// <summary>
    /// Runs the suite on a fake bundle: `dotnet` is a script (probe exit <paramref name="probeRc"/> with "no CUDA
    /// device: fake reason" when not 0; `gpu --warm` sleeps $FAKE_SLEEP_WARM), nvidia-smi -L lists one GPU, and
    /// compute-sanitizer prints a version and runs <paramref name="sanitizer"/> (absent when null).
    /// </summary>
    private (int ExitCode, string Output) RunSuite(int probeRc, string? sanitizer, params (string Name, string Value)[] environment)
    {
        if (!File.Exists("/bin/bash") || !File.Exists("/usr/bin/tar") && !File.Exists("/bin/tar")) Assert.Ignore("No bash/tar here.");
        if (!File.Exists("/usr/bin/xz") && !File.Exists("/bin/xz")) Assert.Ignore("No xz here.");
        string root = RepoRoot();
        string bundle = Path.Combine(_dir, "bundle"), fakeBin = Path.Combine(_dir, "bin"), runtime = Path.Combine(_dir, "runtime"), apps = Path.Combine(_dir, "apps");
        foreach (string d in new[] { bundle, fakeBin, runtime, Path.Combine(apps, "tests"), Path.Combine(apps, "bench") }) Directory.CreateDirectory(d);
        Script(Path.Combine(runtime, "dotnet"), $"""
            case "$*" in
              *"gpu --probe"*) if [ {probeRc} -eq 0 ]; then echo "CUDA device: fake"; else echo "no CUDA device: fake reason"; fi; exit {probeRc};;
              *"gpu --warm"*) sleep "${"{"}FAKE_SLEEP_WARM:-0{"}"}"; echo "fa_fake sm_90: 32 registers, 0 B smem, 0 B stack, 0/0 B spill stores/loads";;
              *) echo "fake dotnet $*";;
            esac
            """);
        Script(Path.Combine(fakeBin, "nvidia-smi"), """[ "$1" = "-L" ] && echo "GPU 0: Fake GPU (UUID: GPU-0)" || echo "fake nvidia-smi" """);
        if (sanitizer is not null)
        {
            Script(Path.Combine(fakeBin, "compute-sanitizer"), $"""
                [ "$1" = "--version" ] && {"{"} echo "NVIDIA (R) Compute Sanitizer fake"; exit 0; {"}"}
                {sanitizer}
                """);
        }
        File.WriteAllText(Path.Combine(apps, "tests", "FastAttention.Tests.dll"), "");
        File.WriteAllText(Path.Combine(apps, "bench", "FastAttention.Bench.dll"), "");
        Assert.That(Run("/bin/bash", ["-c", $"tar -C '{runtime}' -cJf '{bundle}/dotnet-runtime.tar.xz' . && tar -C '{apps}' -cJf '{bundle}/apps.tar.xz' ."], []).ExitCode, Is.Zero);
        File.Copy(Path.Combine(root, "perf", "gpu", "summarize.py"), Path.Combine(bundle, "summarize.py"), overwrite: true);
        var env = new List<(string, string)> { ("PATH", $"{fakeBin}:/usr/bin:/bin"), ("HOME", _dir), ("TMPDIR", _dir) };
        env.AddRange(environment);
        return Run("/bin/bash", [Path.Combine(root, "perf", "gpu", "run-gpu-suite.sh"), bundle, Path.Combine(_dir, "logs")], env);
    }

    private static void Script(string path, string body)
    {
        File.WriteAllText(path, "#!/bin/bash\n" + body + "\n");
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    private static (int ExitCode, string Output) Run(string file, string[] args, IEnumerable<(string Name, string Value)> environment)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in args) info.ArgumentList.Add(a);
        if (environment.Any()) info.Environment.Clear();
        foreach (var (name, value) in environment) info.Environment[name] = value;
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout + stderr.Result);
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
