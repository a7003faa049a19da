// The native-library resolver (env overrides, probing order, messages), the binding entry points, and the
// backend choice on a machine without a GPU.
using System.Reflection;
using System.Runtime.InteropServices;
using FastAttention.Compilation;
using FastAttention.Interop;
using FastAttention.Runtime;

namespace FastAttention.Tests.Cuda;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class NativeLibraryTests
{
    private static Func<string, string?> Env(params (string Name, string Value)[] vars) =>
        name => vars.FirstOrDefault(v => v.Name == name).Value;

    [Test]
    public void OverridePointingToAMissingFileSaysSo()
    {
        var result = NativeLibraries.Load(NativeLibraryId.Nvrtc, Env((NativeLibraries.NvrtcPathVariable, "/nonexistent/libnvrtc.so.12")));
        Assert.That(result.IsLoaded, Is.False);
        Assert.That(result.Error, Does.Contain("FASTATTN_NVRTC_PATH").And.Contain("/nonexistent/libnvrtc.so.12").And.Contain("does not exist"));
    }

    [Test]
    public void OverridePointingToANonLibraryReportsTheLoaderError()
    {
        string notALibrary = Path.GetTempFileName();
        try
        {
            var result = NativeLibraries.Load(NativeLibraryId.Cublas, Env((NativeLibraries.CublasPathVariable, notALibrary)));
            Assert.That(result.IsLoaded, Is.False);
            Assert.That(result.Error, Does.Contain("FASTATTN_CUBLAS_PATH").And.Contain("could not be loaded").And.Contain(notALibrary));
        }
        finally
        {
            File.Delete(notALibrary);
        }
    }

    [Test]
    public void OverrideIsTheOnlyCandidateWhenSet()
    {
        // Even with a working NVRTC installed, a wrong override must fail rather than fall back silently.
        var result = NativeLibraries.Load(NativeLibraryId.Nvrtc, Env((NativeLibraries.NvrtcPathVariable, "libnvrtc-does-not-exist.so")));
        Assert.That(result.IsLoaded, Is.False);
        Assert.That(result.Error, Does.Contain("libnvrtc-does-not-exist.so"));
    }

    [Test]
    public void ToolkitFoldersComeFirstThenSonamesNewestFirst()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("Linux names.");
        var nvrtc = NativeLibraries.Candidates(NativeLibraryId.Nvrtc, Env(("CUDA_PATH", "/opt/cuda-12.4")));
        Assert.That(nvrtc, Is.EqualTo(new[]
        {
            "/opt/cuda-12.4/lib64/libnvrtc.so.13", "/opt/cuda-12.4/lib64/libnvrtc.so.12", "/opt/cuda-12.4/lib64/libnvrtc.so.11.2",
            "/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so.11.2",
            "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2",
        }));
        var cublas = NativeLibraries.Candidates(NativeLibraryId.Cublas, Env(("CUDA_HOME", "/usr/local/cuda")));
        Assert.That(cublas, Is.EqualTo(new[]
        {
            "/usr/local/cuda/lib64/libcublas.so.13", "/usr/local/cuda/lib64/libcublas.so.12", "/usr/local/cuda/lib64/libcublas.so.11",
            "libcublas.so.13", "libcublas.so.12", "libcublas.so.11",
        }), "a folder named twice is probed once");
        Assert.That(NativeLibraries.Candidates(NativeLibraryId.CudaDriver, Env(("CUDA_PATH", "/opt/cuda"))), Is.EqualTo(new[] { "libcuda.so.1" }),
            "the toolkit's stub libcuda must never be picked up");
    }

    [Test]
    public void AMissingLibraryIsReportedWithEveryCandidateAndAHint()
    {
        var result = NativeLibraries.Load(NativeLibraryId.Cublas, Env(("CUDA_PATH", "/nonexistent-cuda")));
        if (result.IsLoaded) Assert.Ignore($"cuBLAS is installed here ({result.LoadedFrom}).");
        Assert.That(result.Error, Does.Contain("cuBLAS not found")
            .And.Contain("/nonexistent-cuda/lib64/libcublas.so.12: no such file")
            .And.Contain("FASTATTN_CUBLAS_PATH"));
    }

    [Test]
    public void MissingDriverSurfacesThroughABindingAsAClearDllNotFoundException()
    {
        if (NativeLibraries.Get(NativeLibraryId.CudaDriver).IsLoaded) Assert.Ignore("The CUDA driver library is installed here.");
        var e = Assert.Throws<DllNotFoundException>(() => CudaDriver.cuDriverGetVersion(out _));
        Assert.That(e!.Message, Does.Contain("CUDA driver library not found").And.Contain(NativeLibraries.CudaDriverPathVariable));
        Assert.That(() => CudaDevice.Count, Throws.TypeOf<DllNotFoundException>());
    }

    [Test]
    public void NvrtcOverrideToTheInstalledFileLoadsIt()
    {
        NvrtcInfo nvrtc = CudaTestSupport.RequireNvrtc();
        string? path = FindLoadedFile(nvrtc.LibraryPath);
        if (path is null) Assert.Ignore($"Cannot locate the file behind {nvrtc.LibraryPath}.");
        var result = NativeLibraries.Load(NativeLibraryId.Nvrtc, Env((NativeLibraries.NvrtcPathVariable, path!)));
        Assert.That(result.IsLoaded, Is.True, result.Error);
        Assert.That(result.LoadedFrom, Is.EqualTo(path));
    }

    [TestCase(typeof(Nvrtc), "Nvrtc")]
    [TestCase(typeof(CudaDriver), "CudaDriver")]
    [TestCase(typeof(Cublas), "Cublas")]
    public void EveryBindingEntryPointIsExported(Type bindings, string library)
    {
        var id = Enum.Parse<NativeLibraryId>(library);
        if (id == NativeLibraryId.Nvrtc)
        {
            CudaTestSupport.RequireNvrtc();
        }
        NativeLoadResult loaded = NativeLibraries.Get(id);
        if (!loaded.IsLoaded) Assert.Ignore(loaded.Error!);
        var entryPoints = bindings.GetMethods(BindingFlags.Public | BindingFlags.Static)
            .Select(m => (Method: m, Import: m.GetCustomAttribute<LibraryImportAttribute>()))
            .Where(x => x.Import is not null)
            .Select(x => x.Import!.EntryPoint ?? x.Method.Name)
            .ToArray();
        Assert.That(entryPoints, Is.Not.Empty);
        var missing = entryPoints.Where(e => !NativeLibrary.TryGetExport(loaded.Handle, e, out _)).ToArray();
        Assert.That(missing, Is.Empty, $"entry points missing from {loaded.LoadedFrom}");
    }

    private static string? FindLoadedFile(string loadedFrom)
    {
        if (File.Exists(loadedFrom)) return loadedFrom;
        foreach (string dir in (string[])["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/cuda/lib64", "/usr/lib"])
        {
            string candidate = Path.Combine(dir, loadedFrom);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }
}

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class BackendSelectorTests
{
    private static CudaProbe Probe(string? driverError = null, Func<int>? deviceCount = null, string? nvrtcError = null) =>
        new(() => driverError,
            deviceCount ?? (() => 1),
            (out NvrtcInfo? info, out string reason) =>
            {
                info = null;
                reason = nvrtcError ?? "";
                return nvrtcError is null;
            },
            _ => throw new AssertionException("GetDevice is not reached in these tests"));

    [Test]
    public void MissingDriverChoosesTheCpuWithTheReason()
    {
        var s = BackendSelector.Select(BackendPreference.Auto, 0, Probe(driverError: "CUDA driver library not found. Tried libcuda.so.1"));
        Assert.That(s.Backend, Is.EqualTo(ComputeBackend.Cpu));
        Assert.That(s.Reason, Does.Contain("CUDA driver library not found").And.Contain("CPU"));
        Assert.That(s.Device, Is.Null);
    }

    [Test]
    public void FailingDriverInitChoosesTheCpu()
    {
        var s = BackendSelector.Select(BackendPreference.Auto, 0,
            Probe(deviceCount: () => throw new CudaException(999, "CUDA_ERROR_UNKNOWN", "unknown error", "cuInit(0)")));
        Assert.That(s.Backend, Is.EqualTo(ComputeBackend.Cpu));
        Assert.That(s.Reason, Does.Contain("failed to initialise").And.Contain("CUDA_ERROR_UNKNOWN"));
    }

    [Test]
    public void NoDeviceChoosesTheCpu()
    {
        var s = BackendSelector.Select(BackendPreference.Auto, 0, Probe(deviceCount: () => 0));
        Assert.That(s.Backend, Is.EqualTo(ComputeBackend.Cpu));
        Assert.That(s.Reason, Does.Contain("no device"));
    }

    [Test]
    public void AMissingOrdinalChoosesTheCpu()
    {
        var s = BackendSelector.Select(BackendPreference.Auto, 3, Probe(deviceCount: () => 2));
        Assert.That(s.Reason, Does.Contain("device 3").And.Contain("2 device"));
    }

    [Test]
    public void MissingNvrtcChoosesTheCpu()
    {
        var s = BackendSelector.Select(BackendPreference.Auto, 0, Probe(nvrtcError: "NVRTC (CUDA run-time compiler) not found. Tried libnvrtc.so.13"));
        Assert.That(s.Backend, Is.EqualTo(ComputeBackend.Cpu));
        Assert.That(s.Reason, Does.Contain("NVRTC").And.Contain("not found"));
    }

    [Test]
    public void CpuCanBeForced()
    {
        var s = BackendSelector.Select(BackendPreference.Cpu, 0, Probe());
        Assert.That(s.Backend, Is.EqualTo(ComputeBackend.Cpu));
        Assert.That(s.Reason, Does.Contain("requested"));
    }

    [Test]
    public void RequiringCudaWhereItIsUnusableThrowsWithTheReason() =>
        Assert.That(() => BackendSelector.Select(BackendPreference.Cuda, 0, Probe(deviceCount: () => 0)),
            Throws.TypeOf<NotSupportedException>().With.Message.Contains("no device"));

    [Test]
    public void NegativeOrdinalIsRejected() =>
        Assert.That(() => BackendSelector.Select(BackendPreference.Auto, -1), Throws.TypeOf<ArgumentOutOfRangeException>());

    [TestCase(7, 5)]
    [TestCase(7, 0)]
    [TestCase(6, 1)]
    public void DevicesOlderThanAmpereAreRejectedWithTheReason(int major, int minor)
    {
        string? reason = BackendSelector.UnsupportedDeviceReason("Tesla T4", new ComputeCapability(major, minor), null);
        Assert.That(reason, Does.Contain("Tesla T4").And.Contain($"{major}.{minor}").And.Contain("8.0"));
    }

    [TestCase(8, 0)]
    [TestCase(8, 6)]
    [TestCase(9, 0)]
    [TestCase(10, 0)]
    public void AmpereAndNewerAreAccepted(int major, int minor) =>
        Assert.That(BackendSelector.UnsupportedDeviceReason("GPU", new ComputeCapability(major, minor), null), Is.Null);

    [Test]
    public void ANvrtcOlderThanTheDeviceStillTargetsIt()
    {
        NvrtcInfo nvrtc = CudaTestSupport.RequireNvrtc();
        Assert.That(BackendSelector.UnsupportedDeviceReason("GPU", new ComputeCapability(12, 0), nvrtc), Is.Null,
            "an older NVRTC compiles for its newest architecture, which a newer GPU runs through PTX");
    }

    [Test]
    public void ThisMachineGetsAReasonedChoice()
    {
        BackendSelection s = BackendSelector.Select();
        Assert.That(s.Reason, Is.Not.Empty);
        TestContext.Out.WriteLine($"{s.Backend}: {s.Reason}");
        bool hasDevice;
        try
        {
            hasDevice = CudaDevice.Count > 0;
        }
        catch (Exception e) when (e is DllNotFoundException or CudaException)
        {
            hasDevice = false;
        }
        if (!hasDevice)
        {
            Assert.That(s.Backend, Is.EqualTo(ComputeBackend.Cpu));
            Assert.That(s.Reason, Does.Match("driver|device"));
        }
        else if (s.Backend == ComputeBackend.Cuda)
        {
            Assert.That(s.Device, Is.Not.Null);
            Assert.That(s.Nvrtc, Is.Not.Null);
        }
    }
}
