// CudaLibraries: a status for each library without a GPU — loaded with a path and a version, or not loaded with the reason.
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Tests.Cuda;

[TestFixture]
public sealed class CudaLibrariesTests
{
    [Test]
    public void EveryLibraryReportsWhereItLoadedFromOrWhyNot()
    {
        var all = CudaLibraries.ProbeAll();
        Assert.That(all.Select(s => s.Library), Is.EqualTo(new[] { CudaLibrary.Driver, CudaLibrary.Nvrtc, CudaLibrary.Cublas }));
        foreach (var s in all)
        {
            if (s.IsLoaded)
            {
                Assert.That(s.LoadedFrom, Is.Not.Null.And.Not.Empty, s.Library.ToString());
                Assert.That(s.Version is not null || s.Error is not null, s.Library.ToString());
            }
            else
            {
                Assert.That(s.LoadedFrom, Is.Null);
                Assert.That(s.Version, Is.Null);
                Assert.That(s.Error, Does.Contain("not found").Or.Contain("not loaded"), s.Library.ToString());
            }
        }
    }

    [Test]
    public void NvrtcVersionMatchesNvrtcInfo()
    {
        NvrtcInfo nvrtc = CudaTestSupport.RequireNvrtc();
        var status = CudaLibraries.Probe(CudaLibrary.Nvrtc);
        Assert.That(status.IsLoaded, Is.True);
        Assert.That(status.Version, Is.EqualTo($"{nvrtc.Version.Major}.{nvrtc.Version.Minor}"));
    }

    [TestCase(12040, "12.4")]
    [TestCase(11080, "11.8")]
    [TestCase(13000, "13.0")]
    public void DriverVersionsReadAsMajorMinor(int version, string expected) =>
        Assert.That(CudaLibraries.FormatCudaVersion(version), Is.EqualTo(expected));
}
