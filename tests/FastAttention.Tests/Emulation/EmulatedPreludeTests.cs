// The GPU checks of the prelude smoke kernel and the utility kernels (Cuda/GpuRuntimeTests), run on the kernel
// emulator: its ldmatrix / mma.sync / cvt / shfl semantics come from the PTX ISA, so agreement here means the
// prelude's inline PTX and its fragment comments agree with the ISA.
using FastAttention.Compilation;
using FastAttention.Runtime;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Emulation;

[TestFixture]
[Category("Emulated")]
public sealed class EmulatedPreludeTests
{
    [OneTimeSetUp]
    public void RequireEmulator() => KernelEmulator.Require();

    [TestCase(KernelElementType.Float16)]
    [TestCase(KernelElementType.BFloat16)]
    public void PreludeSmokeKernelMatchesTheCpu(KernelElementType type)
    {
        if (type == KernelElementType.Float16) PreludeSmoke<Half>(type);
        else PreludeSmoke<BFloat16>(type);
    }

    private static void PreludeSmoke<T>(KernelElementType type) where T : unmanaged
    {
        var c = new PreludeSmokeCase();

        EmulatedModule module = KernelEmulator.Load(KernelRegistry.PreludeSmoke(type));
        using var dA = new HostBuffer<T>(c.A.Select(Num.FromFloat<T>).ToArray());
        using var dBnk = new HostBuffer<T>(c.Bnk.Select(Num.FromFloat<T>).ToArray());
        using var dBkn = new HostBuffer<T>(c.Bkn.Select(Num.FromFloat<T>).ToArray());
        using var dNk = new HostBuffer<float>(128);
        using var dKn = new HostBuffer<float>(128);
        using var dRound = new HostBuffer<float>(128);
        using var rowSum = new HostBuffer<float>(16);
        using var stats = new HostBuffer<float>(2);
        foreach (var b in new[] { dNk, dKn, dRound, rowSum, stats }) b.Poison();
        var args = new KernelArguments();
        foreach (nint p in (nint[])[dA.Pointer, dBnk.Pointer, dBkn.Pointer, dNk.Pointer, dKn.Pointer, dRound.Pointer, rowSum.Pointer, stats.Pointer])
        {
            args.Add(p);
        }
        module.Launch($"fa_prelude_smoke_mma_{type.Suffix()}", new LaunchConfig(1, 32), ref args);
        foreach (var (b, name) in new[] { (dNk, "d_nk"), (dKn, "d_kn"), (dRound, "d_round"), (rowSum, "row_sum"), (stats, "stats") }) b.Check(name);

        c.AssertOutputs<T>(dNk.ToArray(), dKn.ToArray(), dRound.ToArray(), rowSum.ToArray(), stats.ToArray());
    }

    [TestCase(KernelElementType.Float32)]
    [TestCase(KernelElementType.Float16)]
    [TestCase(KernelElementType.BFloat16)]
    public void UtilityKernelsMatchTheCpu(KernelElementType type)
    {
        switch (type)
        {
            case KernelElementType.Float32: UtilityKernels<float>(); break;
            case KernelElementType.Float16: UtilityKernels<Half>(); break;
            default: UtilityKernels<BFloat16>(); break;
        }
    }

    private static void UtilityKernels<T>() where T : unmanaged
    {
        const int n = 10_007;
        string s = KernelElementTypes.Of<T>().Suffix();
        EmulatedModule module = KernelEmulator.Load(KernelRegistry.Utility(KernelElementTypes.Of<T>()));
        T[] xHost = Enumerable.Range(0, n).Select(i => Num.FromFloat<T>((i % 97) * 0.25f - 12f)).ToArray();
        T[] yHost = Enumerable.Range(0, n).Select(i => Num.FromFloat<T>((i % 89) * 0.5f - 20f)).ToArray();
        using var x = new HostBuffer<T>(xHost);
        using var y = new HostBuffer<T>(yHost);
        using var z = new HostBuffer<T>(n);
        z.Poison();
        // A grid smaller than n / 256 exercises the grid-stride loops.
        var config = new LaunchConfig(7, 256);

        var axpy = new KernelArguments();
        axpy.Add(-0.5f);
        axpy.Add(x.Pointer);
        axpy.Add(y.Pointer);
        axpy.Add((long)n);
        module.Launch($"fa_axpy_{s}", config, ref axpy);
        var copy = new KernelArguments();
        copy.Add(y.Pointer);
        copy.Add(z.Pointer);
        copy.Add((long)n);
        module.Launch($"fa_copy_{s}", config, ref copy);
        T[] expected = new T[n];
        for (int i = 0; i < n; i++) expected[i] = Num.FromFloat<T>(-0.5f * Num.ToFloat(xHost[i]) + Num.ToFloat(yHost[i]));
        Assert.That(z.ToArray(), Is.EqualTo(expected), "axpy then copy");

        var fill = new KernelArguments();
        fill.Add(z.Pointer);
        fill.Add(0.3f);
        fill.Add((long)n);
        module.Launch($"fa_fill_{s}", config, ref fill);
        Assert.That(z.ToArray(), Is.All.EqualTo(Num.FromFloat<T>(0.3f)));
        x.Check("x");
        y.Check("y");
        z.Check("z");
    }
}
