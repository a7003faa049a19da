// Every registered kernel specialisation must build for the emulator as well as for NVRTC: the emulated tests can
// then run any of them, and inline PTX the emulator does not know is caught here (by name) rather than in a test
// that happens to need it.
using FastAttention.Compilation;

namespace FastAttention.Tests.Emulation;

[TestFixture]
[Category("Emulated")]
public sealed class EmulatedCompileTests
{
    private static IEnumerable<TestCaseData> Specializations() =>
        KernelRegistry.All.Select(s => new TestCaseData(s).SetArgDisplayNames(s.Name));

    [OneTimeSetUp]
    public void RequireEmulator() => KernelEmulator.Require();

    [TestCaseSource(nameof(Specializations))]
    public void EveryRegisteredSpecialisationBuildsForTheEmulator(KernelSpecialization specialization)
    {
        EmulatedModule module = KernelEmulator.Load(specialization);
        Assert.That(File.Exists(module.LibraryPath), Is.True);
    }
}
