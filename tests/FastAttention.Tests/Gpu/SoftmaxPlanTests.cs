// Host side of the GPU softmax, without a GPU: kernel choice, grid, the packed parameter block (layout and
// contents), the mask data layout, and argument checks that match the CPU softmax's.
using System.Runtime.InteropServices;
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class SoftmaxPlanTests
{
    [TestCase(1, "Group")]
    [TestCase(17, "Group")]
    [TestCase(256, "Group")]
    [TestCase(257, "Warp")]
    [TestCase(1024, "Warp")]
    [TestCase(1025, "Block")]
    [TestCase(8192, "Block")]
    [TestCase(8193, "Online")]
    [TestCase(1 << 20, "Online")]
    public void TunedKernelFollowsTheRowLength(int keys, string expectedName)
    {
        var expected = Enum.Parse<SoftmaxKernel>(expectedName);
        var plan = SoftmaxPlan.For(1000, keys, unitStride: true, CudaKernelVariant.Tuned, 132);
        Assert.That(plan.Kernel, Is.EqualTo(expected));
        int threadsPerRow = expected switch { SoftmaxKernel.Group => SoftmaxPlan.GroupThreads, SoftmaxKernel.Warp => 32, _ => 256 };
        Assert.That(plan.ThreadsPerBlock, Is.EqualTo(expected is SoftmaxKernel.Group or SoftmaxKernel.Warp ? 128 : 256));
        Assert.That(plan.RowsPerBlock * threadsPerRow, Is.EqualTo(plan.ThreadsPerBlock), "8 threads, a warp or a CTA per row");
        if (expected != SoftmaxKernel.Online) Assert.That(keys, Is.LessThanOrEqualTo(threadsPerRow * 32), "the row fits 32 values per thread");
    }

    [TestCase(17)]
    [TestCase(4000)]
    public void StridedRowsGoToTheOnlineKernel(int keys)
    {
        Assert.That(SoftmaxPlan.For(10, keys, unitStride: false, CudaKernelVariant.Tuned, 108).Kernel, Is.EqualTo(SoftmaxKernel.Online));
    }

    [TestCase(1, true)]
    [TestCase(5000, false)]
    [TestCase(100000, true)]
    public void PlainVariantAlwaysRunsThePlainKernel(int keys, bool unit)
    {
        var plan = SoftmaxPlan.For(77, keys, unit, CudaKernelVariant.Plain, 108);
        Assert.That(plan.Kernel, Is.EqualTo(SoftmaxKernel.Plain));
        Assert.That((plan.ThreadsPerBlock, plan.RowsPerBlock, plan.Grid), Is.EqualTo((128, 4, 20)));
    }

    [TestCase(1L, 1)]
    [TestCase(4L, 1)]
    [TestCase(5L, 2)]
    [TestCase(4L * 132 * 16, 132 * 16)]
    [TestCase(4L * 132 * 16 + 1, 132 * 16)]
    [TestCase(1L << 40, 132 * 16)]
    [TestCase(16L, 1, 64)]
    [TestCase(17L, 2, 64)]
    [TestCase(16L * 132 * 16, 132 * 16, 64)]
    [TestCase(16L * 132 * 16 + 1, 132 * 16, 64)]
    public void GridCoversTheRowsUpToTheCap(long rows, int expectedGrid, int keys = 512)
    {
        var plan = SoftmaxPlan.For(rows, keys, true, CudaKernelVariant.Tuned, 132);
        Assert.That(plan.Grid, Is.EqualTo(expectedGrid));
        // Grid-stride: every row r is visited by CTA (r / RowsPerBlock) % Grid.
        Assert.That(Math.Min((rows + plan.RowsPerBlock - 1) / plan.RowsPerBlock, plan.Grid), Is.EqualTo(plan.Grid));
    }

    [Test]
    public void BadCountsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => SoftmaxPlan.For(0, 5, true, CudaKernelVariant.Tuned, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => SoftmaxPlan.For(5, 0, true, CudaKernelVariant.Tuned, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => SoftmaxPlan.For(5, 5, true, CudaKernelVariant.Tuned, 0));
    }

    [Test]
    public void EveryPlannedKernelIsInTheRegisteredModule()
    {
        foreach (KernelElementType type in new[] { KernelElementType.Float32, KernelElementType.Float16, KernelElementType.BFloat16 })
        {
            var names = KernelRegistry.Softmax(type).KernelNames;
            foreach (SoftmaxKernel kernel in Enum.GetValues<SoftmaxKernel>())
            {
                string name = new SoftmaxPlan(kernel, 128, 4, 1).KernelName(type);
                Assert.That(names, Does.Contain(name));
            }
            Assert.That(KernelRegistry.All, Does.Contain(KernelRegistry.Softmax(type)));
        }
    }

    [Test]
    public void ParamsLayoutMatchesTheKernelStruct()
    {
        // fa_softmax_params in softmax.cu: 5 pointers, 9 int64, 12 ints, 2 floats, 2 ints = 176 bytes.
        Assert.That(Marshal.SizeOf<SoftmaxParams>(), Is.EqualTo(SoftmaxParams.Size));
        Assert.That(System.Runtime.CompilerServices.Unsafe.SizeOf<SoftmaxParams>(), Is.EqualTo(176));
        (string Field, int Offset)[] expected =
        [
            ("X", 0), ("Y", 8), ("QueryLengths", 16), ("KeyLengths", 24), ("Keep", 32), ("Xs0", 40), ("Xs3", 64), ("Ys0", 72),
            ("Ys3", 96), ("Rows", 104), ("Batch", 112), ("Sk", 124), ("Causal", 128), ("WindowRight", 136), ("MaskHeads", 140),
            ("BlockSizeK", 156), ("Sign", 160), ("Log2Scale", 164), ("Vec", 168), ("Unit", 172),
        ];
        foreach (var (field, offset) in expected)
        {
            Assert.That((int)Marshal.OffsetOf<SoftmaxParams>(field), Is.EqualTo(offset), field);
        }
        string source = File.ReadAllText(Path.Combine(SourceRoot(), "native", "kernels", "softmax.cu"));
        Assert.That(source, Does.Contain("static_assert(sizeof(fa_softmax_params) == 176"));
    }

    [Test]
    public void ParamsCarryShapeStridesScaleAndMask()
    {
        nint[] lengths = [2, 3, 5, 40];
        nint[] xStrides = [600, 200, 40, 1];
        nint[] yStrides = [3 * 5 * 48, 5 * 48, 48, 1];   // padded rows of 48
        var bm = BlockSparseMask.Local(5, 40, 2, 8, 1, 0, heads: 3);
        var mask = new AttentionMask { Causal = true, WindowLeft = 7, KeyLengths = [40, 30], QueryLengths = [5, 2], BlockMask = bm };
        var layout = SoftmaxMaskData.LayoutOf(mask);
        var p = SoftmaxParams.Create(4096, xStrides, 8192, yStrides, lengths, 4, -0.5f, mask, 1 << 20, layout);
        Assert.That((p.X, p.Y), Is.EqualTo(((nint)4096, (nint)8192)));
        Assert.That((p.Batch, p.Heads, p.Sq, p.Sk, p.Rows), Is.EqualTo((2, 3, 5, 40, 30L)));
        Assert.That((p.Xs0, p.Xs1, p.Xs2, p.Xs3), Is.EqualTo((600L, 200L, 40L, 1L)));
        Assert.That((p.Ys0, p.Ys1, p.Ys2, p.Ys3), Is.EqualTo((720L, 240L, 48L, 1L)));
        Assert.That((p.Causal, p.WindowLeft, p.WindowRight), Is.EqualTo((1, 7, -1)));
        Assert.That(p.Sign, Is.EqualTo(-1f));
        Assert.That(p.Log2Scale, Is.EqualTo(0.5f * 1.44269504f).Within(1e-6f));
        Assert.That((p.MaskHeads, p.QueryBlocks, p.KeyBlocks, p.BlockSizeQ, p.BlockSizeK), Is.EqualTo((3, 3, 5, 2, 8)));
        Assert.That(p.QueryLengths, Is.EqualTo((nint)(1 << 20) + layout.QueryLengthsOffset));
        Assert.That(p.KeyLengths, Is.EqualTo((nint)(1 << 20) + layout.KeyLengthsOffset));
        Assert.That(p.Keep, Is.EqualTo((nint)(1 << 20) + layout.KeepOffset));
        Assert.That((p.Vec, p.Unit), Is.EqualTo((1, 1)), "fp32 rows of 40 and 48 elements are multiples of 16 bytes");

        var none = SoftmaxParams.Create(4096, xStrides, 8192, yStrides, lengths, 4, 0f, AttentionMask.None, 0, SoftmaxMaskData.LayoutOf(AttentionMask.None));
        Assert.That((none.QueryLengths, none.KeyLengths, none.Keep), Is.EqualTo(((nint)0, (nint)0, (nint)0)));
        Assert.That((none.Sign, none.Log2Scale), Is.EqualTo((0f, 1.44269504f)), "scale 0: logits 0, base-2 factor log2(e)");
        Assert.That((none.MaskHeads, none.QueryBlocks, none.KeyBlocks, none.BlockSizeQ, none.BlockSizeK), Is.EqualTo((1, 1, 1, 1, 1)));
    }

    [Test]
    public void SixteenByteAccessNeedsAlignedRowsAndUnitStride()
    {
        nint[] lengths = [1, 2, 3, 24];
        // fp16: 8 elements per 16 bytes. Row stride 24 (48 bytes) is fine, 20 is not; a misaligned base is not.
        Assert.That(Make(4096, [0, 72, 24, 1], lengths, 2).Vec, Is.EqualTo(1));
        Assert.That(Make(4096, [0, 60, 20, 1], [1, 2, 3, 20], 2).Vec, Is.EqualTo(0));
        Assert.That(Make(4098, [0, 72, 24, 1], lengths, 2).Vec, Is.EqualTo(0));
        var strided = Make(4096, [0, 24, 48, 2], lengths, 2);
        Assert.That((strided.Vec, strided.Unit), Is.EqualTo((0, 0)));
        // Strides of length-1 dimensions are ignored (set to 0), so they cannot block 16-byte access.
        var odd = Make(4096, [13, 72, 24, 1], lengths, 2);
        Assert.That((odd.Xs0, odd.Vec), Is.EqualTo((0L, 1)));
        // A single key: the last stride is irrelevant.
        var single = Make(4096, [0, 3, 1, 7], [1, 2, 3, 1], 4);
        Assert.That((single.Xs3, single.Unit), Is.EqualTo((0L, 1)));

        static SoftmaxParams Make(nint x, nint[] strides, nint[] lengths, int elementSize) =>
            SoftmaxParams.Create(x, strides, 8192, ContiguousStrides(lengths), lengths, elementSize, 1f, AttentionMask.None, 0, default);
    }

    [Test]
    public void MaskDataHoldsLengthsAndEveryKeepFlag()
    {
        var rng = new Rng(41);
        var bm = MaskSpec.Custom(rng, 3, 37, 53, 8, 16);
        var mask = new AttentionMask { KeyLengths = [53, 9], QueryLengths = [1, 37], BlockMask = bm };
        var layout = SoftmaxMaskData.LayoutOf(mask);
        Assert.That((layout.QueryLengthsOffset, layout.KeyLengthsOffset, layout.KeepOffset), Is.EqualTo((0, 8, 16)));
        int flags = 3 * 5 * 4;
        Assert.That(layout.Size, Is.EqualTo((16 + flags + 3) / 4 * 4));
        var bytes = Enumerable.Repeat((byte)0xCC, layout.Size + 8).ToArray();
        layout.Write(mask, bytes);
        Assert.That(BitConverter.ToInt32(bytes, 0), Is.EqualTo(1));
        Assert.That(BitConverter.ToInt32(bytes, 4), Is.EqualTo(37));
        Assert.That(BitConverter.ToInt32(bytes, 8), Is.EqualTo(53));
        Assert.That(BitConverter.ToInt32(bytes, 12), Is.EqualTo(9));
        for (int h = 0; h < 3; h++)
            for (int q = 0; q < 5; q++)
                for (int k = 0; k < 4; k++)
                    Assert.That(bytes[16 + (h * 5 + q) * 4 + k], Is.EqualTo(bm.IsKept(h, q, k) ? 1 : 0), $"flag ({h}, {q}, {k})");
        Assert.That(bytes[layout.Size], Is.EqualTo(0xCC), "nothing written past Size");

        var onlyKeys = SoftmaxMaskData.LayoutOf(new AttentionMask { KeyLengths = [3] });
        Assert.That(onlyKeys, Is.EqualTo(new SoftmaxMaskData(-1, 0, -1, 4)));
        Assert.That(SoftmaxMaskData.LayoutOf(AttentionMask.CausalMask).Size, Is.Zero, "causal and window need no device data");
    }

    private static readonly (string What, nint[] Lengths, nint[] OutLengths, nint[] OutStrides, float Scale, AttentionMask Mask)[] BadCases =
    [
        ("rank 3", [2, 3, 4], [2, 3, 4], [12, 4, 1], 1f, AttentionMask.None),
        ("zero dim", [2, 0, 4, 5], [2, 0, 4, 5], [0, 20, 5, 1], 1f, AttentionMask.None),
        ("NaN scale", [1, 2, 3, 4], [1, 2, 3, 4], [24, 12, 4, 1], float.NaN, AttentionMask.None),
        ("infinite scale", [1, 2, 3, 4], [1, 2, 3, 4], [24, 12, 4, 1], float.PositiveInfinity, AttentionMask.None),
        ("output lengths", [1, 2, 3, 4], [1, 2, 3, 5], [30, 15, 5, 1], 1f, AttentionMask.None),
        ("output stride 0", [1, 2, 3, 4], [1, 2, 3, 4], [24, 12, 0, 1], 1f, AttentionMask.None),
        ("key lengths count", [2, 2, 3, 4], [2, 2, 3, 4], [24, 12, 4, 1], 1f, new AttentionMask { KeyLengths = [1] }),
        ("key length too long", [2, 2, 3, 4], [2, 2, 3, 4], [24, 12, 4, 1], 1f, new AttentionMask { KeyLengths = [1, 5] }),
        ("block mask geometry", [1, 2, 8, 8], [1, 2, 8, 8], [128, 64, 8, 1], 1f, new AttentionMask { BlockMask = BlockSparseMask.Dense(8, 16, 4, 4) }),
        ("block mask heads", [1, 2, 8, 8], [1, 2, 8, 8], [128, 64, 8, 1], 1f, new AttentionMask { BlockMask = BlockSparseMask.Dense(8, 8, 4, 4, heads: 3) }),
    ];

    private static IEnumerable<TestCaseData> Bad() =>
        BadCases.Select((c, i) => new TestCaseData(i).SetName($"ValidationMatchesCpu({c.What})"));

    [TestCaseSource(nameof(Bad))]
    public void ValidationMatchesCpu(int index)
    {
        var c = BadCases[index];
        // The CPU softmax on host tensors of the same lengths/strides gives the reference exception.
        var input = new float[4096];
        var output = new float[4096];
        Exception? cpu = null;
        try
        {
            CpuAttention.Softmax<float>(HostView(input, c.Lengths, ContiguousStrides(c.Lengths)),
                HostView(output, c.OutLengths, c.OutStrides), c.Scale, c.Mask);
        }
        catch (ArgumentException e)
        {
            cpu = e;
        }
        Assert.That(cpu, Is.Not.Null, "the CPU rejects the case");
        var gpu = Assert.Catch<ArgumentException>(() =>
            CudaSoftmax.Validate(c.Lengths.Length, c.Lengths, c.OutLengths.Length, c.OutLengths, c.OutStrides, c.Scale, c.Mask))!;
        Assert.That(gpu.GetType(), Is.EqualTo(cpu!.GetType()), gpu.Message);
        Assert.That(gpu.ParamName, Is.EqualTo(((ArgumentException)cpu).ParamName), gpu.Message);
        Assert.That(gpu.Message, Is.EqualTo(cpu.Message));
    }

    [Test]
    public void ValidInputsPass()
    {
        nint[] l = [2, 3, 5, 40];
        Assert.DoesNotThrow(() => CudaSoftmax.Validate(4, l, 4, l, ContiguousStrides(l), -2f,
            new AttentionMask { Causal = true, KeyLengths = [40, 0], BlockMask = BlockSparseMask.Dense(5, 40, 2, 16, heads: 3) }));
    }

    // System.Numerics.Tensors wants stride 0 on length-1 dimensions and all-zero strides when a length is 0.
    private static TensorSpan<float> HostView(float[] data, nint[] lengths, nint[] strides) =>
        lengths.Contains(0) ? new TensorSpan<float>(data, lengths, new nint[lengths.Length]) : Views.Strided(data, lengths, strides);

    private static nint[] ContiguousStrides(nint[] lengths)
    {
        var s = new nint[lengths.Length];
        nint acc = 1;
        for (int i = lengths.Length - 1; i >= 0; i--)
        {
            s[i] = acc;
            acc *= lengths[i];
        }
        return s;
    }

    private static string SourceRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "CMakeLists.txt"))) return dir.FullName;
        }
        Assert.Ignore("Not run from a source checkout.");
        return "";
    }
}
