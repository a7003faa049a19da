// NVRTC without a GPU: every registered specialisation compiles for sm_80 and sm_90 with zero spills and no
// warnings; PTX fallback; compiler errors reach the exception with the full log and options.
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Tests.Cuda;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class KernelCompileTests
{
    // One memory-only compiler for the fixture: each (specialisation, architecture) is compiled exactly once.
    private static readonly KernelCompiler s_compiler = new(new KernelCache(null));

    private static IEnumerable<TestCaseData> EverySpecialisation() =>
        from spec in KernelRegistry.All
        from arch in CudaTestSupport.CompileArchitectures
        select new TestCaseData(spec, arch).SetName($"{spec.Name} {arch.SmName}");

    [Test]
    public void NvrtcSupportsTheTargetArchitectures()
    {
        NvrtcInfo nvrtc = CudaTestSupport.RequireNvrtc();
        TestContext.Out.WriteLine($"{nvrtc}: {string.Join(" ", nvrtc.SupportedArchitectures.Select(a => a.SmName))}");
        Assert.That(nvrtc.Version, Is.GreaterThanOrEqualTo(new Version(11, 2)));
        Assert.That(nvrtc.SupportedArchitectures, Is.SupersetOf(CudaTestSupport.CompileArchitectures));
        Assert.That(nvrtc.SupportedArchitectures, Is.Ordered);
    }

    [TestCaseSource(nameof(EverySpecialisation))]
    public void EverySpecialisationCompilesWithoutSpills(KernelSpecialization spec, ComputeCapability arch)
    {
        CudaTestSupport.RequireNvrtc();
        CompiledModule module = s_compiler.Compile(spec, CompileTarget.Cubin(arch));
        Assert.That(module.Image.Length, Is.GreaterThan(0));
        Assert.That(module.Image.Span[..4].ToArray(), Is.EqualTo(new byte[] { 0x7F, (byte)'E', (byte)'L', (byte)'F' }), "a CUBIN is an ELF file");
        Assert.That(module.Log, Does.Not.Contain("warning"), module.Log);
        Assert.That(module.ResourceUsage.Keys, Is.EquivalentTo(spec.KernelNames), $"ptxas report:\n{module.Log}");
        foreach (KernelResourceUsage usage in module.ResourceUsage.Values)
        {
            TestContext.Out.WriteLine(usage);
            Assert.That(usage.Architecture, Is.EqualTo(arch.SmName));
            Assert.That(usage.HasSpills, Is.False, usage.ToString());
            Assert.That(usage.StackFrameBytes, Is.Zero, usage.ToString());
            Assert.That(usage.Registers, Is.InRange(1, 255), usage.ToString());
        }
    }

    [Test]
    public void PtxTargetGivesPtxText()
    {
        CudaTestSupport.RequireNvrtc();
        CompiledModule module = s_compiler.Compile(KernelRegistry.Utility(KernelElementType.Float16), CompileTarget.Ptx(new(9, 0)));
        string ptx = System.Text.Encoding.ASCII.GetString(module.Image.Span).TrimEnd('\0');
        Assert.That(ptx, Does.Contain(".target sm_90").And.Contain(".entry fa_fill_f16"));
        Assert.That(module.Image.Span[^1], Is.Zero, "PTX is NUL-terminated for cuModuleLoadData");
        Assert.That(module.ResourceUsage, Is.Empty, "ptxas does not run for PTX");
        Assert.That(module.Options, Does.Contain("--gpu-architecture=compute_90").And.Not.Contain("--ptxas-options=-v"));
    }

    [Test]
    public void ABrokenKernelThrowsWithTheFullLogAndOptions()
    {
        CudaTestSupport.RequireNvrtc();
        var broken = KernelSpecialization.FromSource("broken_kernel", """
            extern "C" __global__ void broken(float* out)
            {
                out[0] = undefined_identifier_xyz;
            }
            """, ["broken"], new Dictionary<string, string> { ["FA_DTYPE"] = "0" });
        var e = Assert.Throws<NvrtcCompilationException>(() => s_compiler.Compile(broken, CompileTarget.Cubin(new(8, 0))))!;
        Assert.That(e.ErrorName, Is.EqualTo("NVRTC_ERROR_COMPILATION"));
        Assert.That(e.Log, Does.Contain("undefined_identifier_xyz").And.Contain("error"));
        Assert.That(e.Log, Does.Contain("broken_kernel.cu(3)"), "#line maps messages to the kernel file, past the prelude");
        Assert.That(e.Options, Does.Contain("--gpu-architecture=sm_80").And.Contain("-DFA_DTYPE=0"));
        Assert.That(e.Message, Does.Contain("undefined_identifier_xyz").And.Contain("--gpu-architecture=sm_80"));
        Assert.That(e.Call, Does.Contain("broken_kernel.cu"));
    }

    [Test]
    public void AFailedCompileIsNotCached()
    {
        CudaTestSupport.RequireNvrtc();
        var compiler = new KernelCompiler(new KernelCache(null));
        var broken = KernelSpecialization.FromSource("broken_twice", "this is not CUDA", ["nothing"]);
        Assert.Throws<NvrtcCompilationException>(() => compiler.Compile(broken, CompileTarget.Cubin(new(8, 0))));
        Assert.Throws<NvrtcCompilationException>(() => compiler.Compile(broken, CompileTarget.Cubin(new(8, 0))));
        Assert.That(compiler.Compilations, Is.EqualTo(2));
    }

    [Test]
    public void AnInvalidOptionIsReportedByName()
    {
        CudaTestSupport.RequireNvrtc();
        var compiler = new KernelCompiler(new KernelCache(null), new CompileOptions { ExtraOptions = ["--no-such-option"] });
        var e = Assert.Throws<NvrtcCompilationException>(() =>
            compiler.Compile(KernelRegistry.Utility(KernelElementType.Float32), CompileTarget.Cubin(new(8, 0))))!;
        Assert.That(e.ErrorName, Is.EqualTo("NVRTC_ERROR_INVALID_OPTION"));
        Assert.That(e.Message, Does.Contain("--no-such-option"));
    }

    [Test]
    public void AnArchitectureNvrtcDoesNotKnowIsRefusedBeforeCompiling()
    {
        CudaTestSupport.RequireNvrtc();
        Assert.That(() => s_compiler.Compile(KernelRegistry.Utility(KernelElementType.Float32), CompileTarget.Cubin(new(2, 0))),
            Throws.TypeOf<NotSupportedException>().With.Message.Contains("sm_20"));
    }

    [Test]
    public void AKernelFileWithoutItsElementTypeSaysWhichMacroIsMissing()
    {
        // The prelude defines fa_elem only under FA_DTYPE, so a default set after it could never work: the file
        // must stop with a message that names the macro, not with "fa_elem is undefined".
        CudaTestSupport.RequireNvrtc();
        var noType = new KernelSpecialization("utility_no_dtype", "utility.cu", ["fa_fill_f32"]);
        var e = Assert.Throws<NvrtcCompilationException>(() => s_compiler.Compile(noType, CompileTarget.Cubin(new(8, 0))))!;
        Assert.That(e.Log, Does.Contain("needs -DFA_DTYPE").And.Not.Contain("fa_elem"));
    }

    [Test]
    public void AnUnknownSourceFileIsNamed()
    {
        CudaTestSupport.RequireNvrtc();
        var missing = new KernelSpecialization("missing", "no_such_file.cu", ["k"]);
        Assert.That(() => s_compiler.Compile(missing, CompileTarget.Cubin(new(8, 0))),
            Throws.TypeOf<FileNotFoundException>().With.Message.Contains("no_such_file.cu").And.Message.Contains("utility.cu"));
    }
}
