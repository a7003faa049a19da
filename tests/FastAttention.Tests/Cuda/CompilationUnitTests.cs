// Compilation pieces that need neither NVRTC nor a GPU: ptxas report parsing, targets, specialisations,
// the disk-cache format, the default cache folder, kernel argument packing.
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Tests.Cuda;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class CompilationUnitTests
{
    private const string TwoKernelReport = """
        ptxas info    : 0 bytes gmem
        ptxas info    : Function properties for helper_not_inlined
        ptxas         .     24 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads
        ptxas info    : Compiling entry function 'fa_fwd_hd128_bf16' for 'sm_90'
        ptxas info    : Function properties for fa_fwd_hd128_bf16
        ptxas         .     16 bytes stack frame, 12 bytes spill stores, 20 bytes spill loads
        ptxas info    : Used 255 registers, used 1 barriers, 49152 bytes smem, 536 bytes cmem[0]
        ptxas info    : Compiling entry function 'fa_fill_f32' for 'sm_90'
        ptxas info    : Function properties for fa_fill_f32
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Used 24 registers
        """;

    [Test]
    public void PtxasReportIsParsedPerKernel()
    {
        var usage = PtxasReport.Parse(TwoKernelReport.Replace("\r\n", "\n"));
        Assert.That(usage.Keys, Is.EquivalentTo(new[] { "fa_fwd_hd128_bf16", "fa_fill_f32" }), "only entry functions are reported");
        Assert.That(usage["fa_fwd_hd128_bf16"], Is.EqualTo(new KernelResourceUsage("fa_fwd_hd128_bf16", "sm_90", 255, 49152, 16, 12, 20, 536)));
        Assert.That(usage["fa_fwd_hd128_bf16"].HasSpills, Is.True);
        Assert.That(usage["fa_fill_f32"], Is.EqualTo(new KernelResourceUsage("fa_fill_f32", "sm_90", 24, 0, 0, 0, 0, 0)));
        Assert.That(usage["fa_fill_f32"].HasSpills, Is.False);
    }

    [Test]
    public void PtxasReportOfALogWithoutPtxasLinesIsEmpty() =>
        Assert.That(PtxasReport.Parse("warning: something\n"), Is.Empty);

    [TestCase("8.0", 8, 0)]
    [TestCase("sm_90", 9, 0)]
    [TestCase("compute_86", 8, 6)]
    [TestCase("120", 12, 0)]
    [TestCase(" 7.5 ", 7, 5)]
    public void ComputeCapabilityParses(string text, int major, int minor)
    {
        var cc = ComputeCapability.Parse(text);
        Assert.That(cc, Is.EqualTo(new ComputeCapability(major, minor)));
        Assert.That(cc.SmName, Is.EqualTo($"sm_{major}{minor}"));
        Assert.That(cc.ComputeName, Is.EqualTo($"compute_{major}{minor}"));
    }

    [TestCase("")]
    [TestCase("sm_")]
    [TestCase("8")]
    [TestCase("8.x")]
    [TestCase("8.10")]
    public void ComputeCapabilityRejectsGarbage(string text) =>
        Assert.That(() => ComputeCapability.Parse(text), Throws.TypeOf<FormatException>().With.Message.Contains(text));

    private static readonly ComputeCapability[] s_nvrtc118 =
        [.. new[] { 35, 37, 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90 }.Select(ComputeCapability.FromNumber)];

    [Test]
    public void TargetIsACubinForASupportedDevice()
    {
        Assert.That(CompileTarget.ForDevice(new(8, 0), s_nvrtc118), Is.EqualTo(CompileTarget.Cubin(new(8, 0))));
        Assert.That(CompileTarget.ForDevice(new(9, 0), s_nvrtc118).ArchitectureOption, Is.EqualTo("--gpu-architecture=sm_90"));
    }

    [Test]
    public void TargetFallsBackToPtxOfTheNewestSupportedArchitecture()
    {
        var target = CompileTarget.ForDevice(new(10, 0), s_nvrtc118);
        Assert.That(target, Is.EqualTo(CompileTarget.Ptx(new(9, 0))));
        Assert.That(target.ArchitectureOption, Is.EqualTo("--gpu-architecture=compute_90"));
        Assert.That(CompileTarget.ForDevice(new(8, 9), [new(8, 0), new(9, 0)]), Is.EqualTo(CompileTarget.Ptx(new(8, 0))), "never newer than the device");
    }

    [Test]
    public void TargetForADeviceOlderThanEverySupportedArchitectureIsRefused() =>
        Assert.That(() => CompileTarget.ForDevice(new(7, 0), [new(8, 0), new(9, 0)]),
            Throws.TypeOf<NotSupportedException>().With.Message.Contains("sm_80").And.Message.Contains("7.0"));

    [Test]
    public void SpecialisationsCompareByContent()
    {
        var a = KernelRegistry.Utility(KernelElementType.Float16);
        var b = KernelRegistry.Utility(KernelElementType.Float16);
        Assert.That(a, Is.EqualTo(b));
        Assert.That(a.GetHashCode(), Is.EqualTo(b.GetHashCode()));
        Assert.That(a, Is.Not.EqualTo(KernelRegistry.Utility(KernelElementType.BFloat16)));
        Assert.That(a.DefineOptions, Is.EqualTo(new[] { "-DFA_DTYPE=1" }));
        Assert.That(a.ToString(), Is.EqualTo("utility_f16 (utility.cu -DFA_DTYPE=1)"));
    }

    [Test]
    public void SpecialisationArgumentsAreChecked()
    {
        Assert.That(() => new KernelSpecialization("x", "x.cu", []), Throws.ArgumentException.With.Message.Contains("kernel name"));
        Assert.That(() => new KernelSpecialization("x", "x.cu", ["k"], new Dictionary<string, string> { ["1BAD"] = "1" }),
            Throws.ArgumentException.With.Message.Contains("1BAD"));
        Assert.That(() => KernelRegistry.PreludeSmoke(KernelElementType.Float32), Throws.ArgumentException);
    }

    [Test]
    public void RegistryNamesAreUniqueAndEveryKernelSourceIsUsed()
    {
        var all = KernelRegistry.All;
        Assert.That(all.Select(s => s.Name), Is.Unique);
        Assert.That(all.SelectMany(s => s.KernelNames), Is.Unique, "kernel names say what they are, so no two variants share one");
        var sources = KernelSources.Files.Where(f => f != KernelSources.PreludeFile);
        Assert.That(all.Select(s => s.SourceFile).Distinct(), Is.EquivalentTo(sources));
        Assert.That(KernelSources.Files, Does.Contain(KernelSources.PreludeFile));
    }

    [Test]
    public void CMakeBuildsTheSameSpecialisationsAsTheRegistry()
    {
        string? root = Path.GetDirectoryName(TestContext.CurrentContext.TestDirectory);
        while (root is not null && !File.Exists(Path.Combine(root, "FastAttention.sln")))
        {
            root = Path.GetDirectoryName(root);
        }
        if (root is null || !File.Exists(Path.Combine(root, "CMakeLists.txt")))
        {
            Assert.Ignore("Not run from a source checkout (no CMakeLists.txt above the test assembly).");
        }
        var cmake = System.Text.RegularExpressions.Regex.Matches(File.ReadAllText(Path.Combine(root!, "CMakeLists.txt")),
                @"^fa_variant\((\S+) (\S+) ""([^""]*)""\)", System.Text.RegularExpressions.RegexOptions.Multiline)
            .Select(m => $"{m.Groups[1].Value} {m.Groups[2].Value} {m.Groups[3].Value}");
        var registry = KernelRegistry.All.Select(s => $"{s.Name} {s.SourceFile} {string.Join(';', s.Defines.Select(d => $"{d.Key}={d.Value}"))}");
        Assert.That(cmake, Is.EquivalentTo(registry), "CMakeLists.txt fa_variant(...) lines vs KernelRegistry.All");
    }

    [Test]
    public void ProgramIsThePreludeThenTheSourceWithLineDirectives()
    {
        string program = KernelSources.Program(KernelRegistry.Utility(KernelElementType.Float32));
        Assert.That(program, Does.StartWith("#line 1 \"common.cuh\"\n"));
        int kernelStart = program.IndexOf("#line 1 \"utility.cu\"\n", StringComparison.Ordinal);
        Assert.That(kernelStart, Is.GreaterThan(0));
        Assert.That(program.IndexOf("fa_mma_m16n8k16_bf16", StringComparison.Ordinal), Is.LessThan(kernelStart));
        Assert.That(program, Does.Not.Contain("#include"), "kernels are header-free");
    }

    [Test]
    public void DiskEntryRoundTripsAndRejectsAnotherKey()
    {
        string key = new('A', 64);
        byte[] image = [1, 2, 3, 4, 5];
        byte[] file = KernelCache.Encode(key, KernelImageKind.Cubin, image, "ptxas info : Used 8 registers");
        Assert.That(KernelCache.TryDecode(file, key, out byte[] decoded, out string log), Is.True);
        Assert.That(decoded, Is.EqualTo(image));
        Assert.That(log, Is.EqualTo("ptxas info : Used 8 registers"));
        Assert.That(KernelCache.TryDecode(file, new string('B', 64), out _, out _), Is.False, "another key");
        Assert.That(KernelCache.TryDecode(file.AsSpan(0, file.Length - 1), key, out _, out _), Is.False, "truncated");
        byte[] flipped = (byte[])file.Clone();
        flipped[^3] ^= 0x40;
        Assert.That(KernelCache.TryDecode(flipped, key, out _, out _), Is.False, "payload bit flip");
        Assert.That(KernelCache.TryDecode([], key, out _, out _), Is.False, "empty");
    }

    [Test]
    public void DefaultCacheDirectoryFollowsTheEnvironment()
    {
        Func<string, string?> Env(params (string Name, string Value)[] vars) =>
            name => vars.FirstOrDefault(v => v.Name == name).Value;

        Assert.That(KernelCache.DefaultDirectory(Env((KernelCache.DirectoryVariable, "/tmp/k"))), Is.EqualTo("/tmp/k"));
        Assert.That(KernelCache.DefaultDirectory(Env((KernelCache.DirectoryVariable, "OFF"))), Is.Null);
        if (!OperatingSystem.IsWindows())
        {
            Assert.That(KernelCache.DefaultDirectory(Env(("XDG_CACHE_HOME", "/x"), ("HOME", "/h"))), Is.EqualTo("/x/fastattention/kernels"));
            Assert.That(KernelCache.DefaultDirectory(Env(("HOME", "/h"))), Is.EqualTo("/h/.cache/fastattention/kernels"));
        }
    }

    [Test]
    public void CompileOptionsBecomeTheNvrtcOptionList()
    {
        var spec = KernelRegistry.Utility(KernelElementType.BFloat16);
        var options = new CompileOptions { LineInfo = true, FastMath = true, MaxRegisters = 128, ExtraOptions = ["-DEXTRA=1"] };
        Assert.That(options.ToNvrtcOptions(CompileTarget.Cubin(new(9, 0)), spec), Is.EqualTo(new[]
        {
            "--gpu-architecture=sm_90", "--std=c++17", "--ptxas-options=-v", "-lineinfo", "--use_fast_math", "--maxrregcount=128",
            "-DEXTRA=1", "-DFA_DTYPE=2",
        }));
        Assert.That(CompileOptions.Default.ToNvrtcOptions(CompileTarget.Ptx(new(8, 0)), spec), Is.EqualTo(new[]
        {
            "--gpu-architecture=compute_80", "--std=c++17", "-DFA_DTYPE=2",
        }), "no ptxas report for PTX");
    }

    [Test]
    public void CacheKeyChangesWithEveryInput()
    {
        string[] options = ["--gpu-architecture=sm_80", "-DFA_DTYPE=0"];
        var target = CompileTarget.Cubin(new(8, 0));
        string key = KernelCompiler.CacheKey("program", options, target, new Version(11, 8));
        Assert.That(key, Has.Length.EqualTo(64));
        Assert.That(KernelCompiler.CacheKey("program", options, target, new Version(11, 8)), Is.EqualTo(key));
        Assert.That(KernelCompiler.CacheKey("program2", options, target, new Version(11, 8)), Is.Not.EqualTo(key), "source");
        Assert.That(KernelCompiler.CacheKey("program", ["--gpu-architecture=sm_80", "-DFA_DTYPE=1"], target, new Version(11, 8)), Is.Not.EqualTo(key), "options");
        Assert.That(KernelCompiler.CacheKey("program", options, CompileTarget.Ptx(new(8, 0)), new Version(11, 8)), Is.Not.EqualTo(key), "target");
        Assert.That(KernelCompiler.CacheKey("program", options, target, new Version(12, 4)), Is.Not.EqualTo(key), "NVRTC version");
    }

    [Test]
    public void KernelArgumentsArePackedAndAligned()
    {
        var args = new KernelArguments();
        args.Add((nint)0x1234_5678);
        args.Add(1.5f);
        args.Add((byte)7);
        args.Add(42L);
        Assert.That(args.Count, Is.EqualTo(4));
        Assert.That(args.Get<nint>(0), Is.EqualTo((nint)0x1234_5678));
        Assert.That(args.Get<float>(1), Is.EqualTo(1.5f));
        Assert.That(args.Get<byte>(2), Is.EqualTo((byte)7));
        Assert.That(args.Get<long>(3), Is.EqualTo(42L));
        Assert.That(() => { var a = new KernelArguments(); a.Get<int>(0); }, Throws.TypeOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void KernelArgumentsRefuseMoreThanTheLimit()
    {
        var args = new KernelArguments();
        for (int i = 0; i < KernelArguments.MaxArguments; i++) args.Add(i);
        bool threw = false;
        try
        {
            args.Add(0);
        }
        catch (InvalidOperationException e)
        {
            threw = e.Message.Contains("32 values", StringComparison.Ordinal);
        }
        Assert.That(threw, Is.True);
    }
}
