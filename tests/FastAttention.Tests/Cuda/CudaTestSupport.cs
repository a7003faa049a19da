// Shared setup for the CUDA tests: NVRTC required or ignored, GPU present or ignored, temporary cache folders.
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Tests.Cuda;

internal static class CudaTestSupport
{
    /// <summary>Set (to 1) by .ci/run: a missing NVRTC fails the NVRTC tests instead of ignoring them.</summary>
    public const string RequireNvrtcVariable = "FASTATTN_REQUIRE_NVRTC";

    /// <summary>The architectures every kernel must compile for without spilling.</summary>
    public static readonly ComputeCapability[] CompileArchitectures = [new(8, 0), new(9, 0)];

    /// <summary>The loaded NVRTC; ignores the test when NVRTC is absent, or fails it under CI.</summary>
    public static NvrtcInfo RequireNvrtc()
    {
        if (NvrtcInfo.TryGetCurrent(out NvrtcInfo? info, out string reason))
        {
            return info!;
        }
        if (Environment.GetEnvironmentVariable(RequireNvrtcVariable) == "1")
        {
            Assert.Fail($"NVRTC is required ({RequireNvrtcVariable}=1) but unusable: {reason}");
        }
        Assert.Ignore($"NVRTC is not available: {reason}");
        return null!;
    }

    /// <summary>A context on device 0; ignores the test (with the reason) when there is no CUDA device.</summary>
    public static CudaContext RequireDevice()
    {
        string reason;
        try
        {
            if (CudaDevice.Count > 0)
            {
                return CudaContext.Create(0);
            }
            reason = "the CUDA driver reports no device";
        }
        catch (Exception e) when (e is DllNotFoundException or CudaException)
        {
            reason = e.Message;
        }
        Assert.Ignore($"No CUDA device: {reason}");
        return null!;
    }
}

/// <summary>
/// Base of the GPU fixtures: a context on device 0 for the whole fixture; every test is ignored, with the
/// reason, where no CUDA device exists.
/// </summary>
[Category("Gpu")]
[NonParallelizable]
public abstract class GpuFixture
{
    protected CudaContext Context { get; private set; } = null!;

    [OneTimeSetUp]
    public void AcquireDevice() => Context = CudaTestSupport.RequireDevice();

    [OneTimeTearDown]
    public void ReleaseDevice() => Context?.Dispose();
}

/// <summary>A fresh folder under the temp directory, deleted on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "fastattention-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Leftovers in the temp folder are harmless.
        }
    }
}
