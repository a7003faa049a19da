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
        const int cols = 300, ldOut = 312;
        string s = KernelElementTypes.Of<T>().Suffix();
        EmulatedModule module = KernelEmulator.Load(KernelRegistry.Module(KernelElementTypes.Of<T>()));
        var bias = new Rng(5).Normal<T>(cols);
        // One plain matrix of 37 rows, then 3 matrices of 12 rows each, 40 elements apart (a strided batch).
        foreach (var (rows, rowsPerGroup, groupStride) in new[] { (37L, 37L, 0L), (36L, 12L, 12L * ldOut + 40) })
        {
            long groups = rows / rowsPerGroup;
            long size = groups == 1 ? rows * ldOut : groups * groupStride;
            var (gx, gy, block) = MultiHeadPlan.BiasLaunch(rows, cols);
            foreach (var (gridX, gridY, threads) in new[] { (gx, gy, block), (1u, 5u, 64u) })
            {
                using var b = new HostBuffer<T>(bias);
                using var o = new HostBuffer<T>(Num.Filled<T>((int)size, float.NaN));
                var args = new KernelArguments();
                args.Add(b.Pointer);
                args.Add(o.Pointer);
                args.Add(rows);
                args.Add(cols);
                args.Add((long)ldOut);
                args.Add(rowsPerGroup);
                args.Add(groupStride);
                module.Launch($"fa_bias_rows_{s}", new LaunchConfig(new Dim3(gridX, gridY), threads), ref args);
                b.Check("bias");
                o.Check("out");
                T[] result = o.ToArray();
                var written = new bool[size];
                for (long r = 0; r < rows; r++)
                {
                    long g = r / rowsPerGroup, start = g * groupStride + (r - g * rowsPerGroup) * ldOut;
                    string where = $"row {r} of {rows} (groups of {rowsPerGroup}), grid ({gridX}, {gridY}) x {threads}";
                    Assert.That(result.AsSpan((int)start, cols).ToArray(), Is.EqualTo(bias), where);
                    Array.Fill(written, true, (int)start, cols);
                }
                for (long i = 0; i < size; i++)
                {
                    if (!written[i]) Assert.That(float.IsNaN(Num.ToFloat(result[i])), Is.True, $"element {i} is not an output element but was written");
                }
            }
        }
    }
}
