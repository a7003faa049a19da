// The GPU module's bias broadcast kernel (module.cu, fa_bias_rows) on the kernel emulator with the launch
// MultiHeadPlan.BiasLaunch plans, and with small grids that force both grid-stride loops; padding columns of the
// output (ldOut > cols) must stay untouched.
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Emulation;

[TestFixture]
[Category("Emulated")]
public sealed class EmulatedModuleKernelTests
{
    [OneTimeSetUp]
    public void RequireEmulator() => KernelEmulator.Require();

    [TestCase(KernelElementType.Float32)]
    [TestCase(KernelElementType.Float16)]
    [TestCase(KernelElementType.BFloat16)]
    public void BiasRowsFillsEveryRowAndNothingElse(KernelElementType type)
    {
        switch (type)
        {
            case KernelElementType.Float32: BiasRows<float>(); break;
            case KernelElementType.Float16: BiasRows<Half>(); break;
            default: BiasRows<BFloat16>(); break;
        }
    }

    private static void BiasRows<T>() where T : unmanaged
    {
        const int rows = 37, cols = 300, ldOut = 312;
        string s = KernelElementTypes.Of<T>().Suffix();
        EmulatedModule module = KernelEmulator.Load(KernelRegistry.Module(KernelElementTypes.Of<T>()));
        var bias = new Rng(5).Normal<T>(cols);
        var (gx, gy, block) = MultiHeadPlan.BiasLaunch(rows, cols);
        foreach (var (gridX, gridY, threads) in new[] { (gx, gy, block), (1u, 5u, 64u) })
        {
            using var b = new HostBuffer<T>(bias);
            using var o = new HostBuffer<T>(Num.Filled<T>(rows * ldOut, float.NaN));
            var args = new KernelArguments();
            args.Add(b.Pointer);
            args.Add(o.Pointer);
            args.Add((long)rows);
            args.Add(cols);
            args.Add((long)ldOut);
            module.Launch($"fa_bias_rows_{s}", new LaunchConfig(new Dim3(gridX, gridY), threads), ref args);
            b.Check("bias");
            o.Check("out");
            T[] result = o.ToArray();
            for (int r = 0; r < rows; r++)
            {
                Assert.That(result.AsSpan(r * ldOut, cols).ToArray(), Is.EqualTo(bias), $"row {r}, grid ({gridX}, {gridY}) x {threads}");
                Assert.That(Num.ToFloats<T>(result.AsSpan(r * ldOut + cols, ldOut - cols)), Is.All.NaN, $"padding of row {r}");
            }
        }
    }
}
