// AttentionConfig: every argument rule throws the documented exception naming the parameter (and the
// value where it is out of range); defaults; BuildBlockMask equals the BlockSparseMask builders.

namespace FastAttention.Tests.Module;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class AttentionConfigTests
{
    private static IEnumerable<TestCaseData> OutOfRange()
    {
        static TestCaseData Case(string param, object value, Func<AttentionConfig> build) =>
            new TestCaseData(param, value, build).SetArgDisplayNames($"{param} = {value}");

        yield return Case("modelDim", 0, () => new AttentionConfig(0, 4));
        yield return Case("modelDim", -8, () => new AttentionConfig(-8, 4));
        yield return Case("heads", 0, () => new AttentionConfig(32, 0));
        yield return Case("heads", -1, () => new AttentionConfig(32, -1));
        yield return Case("kvHeads", -1, () => new AttentionConfig(32, 4, -1));
        yield return Case("headDim", -1, () => new AttentionConfig(32, 4, headDim: -1));
        yield return Case("windowLeft", -2, () => new AttentionConfig(32, 4, windowLeft: -2));
        yield return Case("windowLeft", int.MinValue, () => new AttentionConfig(32, 4, windowLeft: int.MinValue));
        yield return Case("windowRight", -2, () => new AttentionConfig(32, 4, windowRight: -2));
        yield return Case("sparse", (SparsePattern)4, () => new AttentionConfig(32, 4, sparse: (SparsePattern)4));
        yield return Case("sparse", (SparsePattern)(-1), () => new AttentionConfig(32, 4, sparse: (SparsePattern)(-1)));
        yield return Case("blockSize", 0, () => new AttentionConfig(32, 4, sparse: SparsePattern.Local, blockSize: 0));
        yield return Case("blockSize", -4, () => new AttentionConfig(32, 4, blockSize: -4));
        yield return Case("localBlocks", -1, () => new AttentionConfig(32, 4, sparse: SparsePattern.Local, localBlocks: -1));
        yield return Case("stride", 0, () => new AttentionConfig(32, 4, sparse: SparsePattern.Strided, stride: 0));
        yield return Case("stride", -3, () => new AttentionConfig(32, 4, stride: -3));
        yield return Case("randomBlocks", -1, () => new AttentionConfig(32, 4, sparse: SparsePattern.Random, randomBlocks: -1));
        yield return Case("scale", float.NaN, () => new AttentionConfig(32, 4, scale: float.NaN));
        yield return Case("scale", float.PositiveInfinity, () => new AttentionConfig(32, 4, scale: float.PositiveInfinity));
        yield return Case("scale", float.NegativeInfinity, () => new AttentionConfig(32, 4, scale: float.NegativeInfinity));
    }

    [TestCaseSource(nameof(OutOfRange))]
    public void OutOfRangeArgumentThrowsNamingIt(string param, object value, Func<AttentionConfig> build)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => build())!;
        Assert.That(ex.ParamName, Is.EqualTo(param));
        Assert.That(ex.ActualValue, Is.EqualTo(value));
    }

    private static IEnumerable<TestCaseData> Inconsistent()
    {
        static TestCaseData Case(string name, string param, string[] numbers, Func<AttentionConfig> build) =>
            new TestCaseData(param, numbers, build).SetArgDisplayNames(name);

        yield return Case("heads 6 % kvHeads 4", "kvHeads", ["6", "4"], () => new AttentionConfig(48, 6, 4));
        yield return Case("heads 8 % kvHeads 3", "kvHeads", ["8", "3"], () => new AttentionConfig(32, 8, 3));
        yield return Case("kvHeads 8 > heads 4", "kvHeads", ["4", "8"], () => new AttentionConfig(32, 4, 8));
        yield return Case("kvHeads 2 > heads 1", "kvHeads", ["1", "2"], () => new AttentionConfig(32, 1, 2));
        yield return Case("modelDim 30 % heads 4 without headDim", "headDim", ["30", "4"], () => new AttentionConfig(30, 4));
        yield return Case("modelDim 7 % heads 3 without headDim", "headDim", ["7", "3"], () => new AttentionConfig(7, 3, 1));
    }

    [TestCaseSource(nameof(Inconsistent))]
    public void InconsistentArgumentsThrowNamingThem(string param, string[] numbers, Func<AttentionConfig> build)
    {
        var ex = Assert.Throws<ArgumentException>(() => build())!;
        Assert.That(ex.ParamName, Is.EqualTo(param));
        foreach (var n in numbers) Assert.That(ex.Message, Does.Contain(n));
    }

    [Test]
    public void Defaults()
    {
        var c = new AttentionConfig(32, 4);
        Assert.Multiple(() =>
        {
            Assert.That(c.ModelDim, Is.EqualTo(32));
            Assert.That(c.Heads, Is.EqualTo(4));
            Assert.That(c.KvHeads, Is.EqualTo(4), "kvHeads 0 -> heads (MHA)");
            Assert.That(c.HeadDim, Is.EqualTo(8), "headDim 0 -> modelDim / heads");
            Assert.That(c.Causal, Is.False);
            Assert.That(c.WindowLeft, Is.EqualTo(-1));
            Assert.That(c.WindowRight, Is.EqualTo(-1));
            Assert.That(c.Sparse, Is.EqualTo(SparsePattern.None));
            Assert.That(c.BlockSize, Is.EqualTo(64));
            Assert.That(c.LocalBlocks, Is.EqualTo(1));
            Assert.That(c.Stride, Is.EqualTo(4));
            Assert.That(c.RandomBlocks, Is.EqualTo(2));
            Assert.That(c.RandomSeed, Is.EqualTo(0UL));
            Assert.That(c.Scale, Is.Null);
            Assert.That(c.Bias, Is.True);
            Assert.That(c.BuildBlockMask(100, 100), Is.Null);
        });
    }

    [Test]
    public void ExplicitValuesAreKept()
    {
        var c = new AttentionConfig(30, 6, 2, 7, causal: true, windowLeft: 0, windowRight: 5, sparse: SparsePattern.Strided, blockSize: 16,
            localBlocks: 0, stride: 1, randomBlocks: 0, randomSeed: ulong.MaxValue, scale: -0.5f, bias: false);
        Assert.Multiple(() =>
        {
            Assert.That((c.ModelDim, c.Heads, c.KvHeads, c.HeadDim), Is.EqualTo((30, 6, 2, 7)));
            Assert.That((c.Causal, c.WindowLeft, c.WindowRight), Is.EqualTo((true, 0, 5)));
            Assert.That((c.Sparse, c.BlockSize, c.LocalBlocks, c.Stride, c.RandomBlocks, c.RandomSeed),
                Is.EqualTo((SparsePattern.Strided, 16, 0, 1, 0, ulong.MaxValue)));
            Assert.That(c.Scale, Is.EqualTo(-0.5f));
            Assert.That(c.Bias, Is.False);
        });
    }

    [Test]
    public void EdgeValuesAreAccepted()
    {
        Assert.DoesNotThrow(() => _ = new AttentionConfig(1, 1));
        Assert.That(new AttentionConfig(32, 8, 1).KvHeads, Is.EqualTo(1), "MQA");
        Assert.That(new AttentionConfig(32, 8, 8).KvHeads, Is.EqualTo(8), "kvHeads = heads");
        Assert.That(new AttentionConfig(30, 4, headDim: 8).HeadDim, Is.EqualTo(8), "explicit headDim lifts divisibility");
        Assert.That(new AttentionConfig(8, 2, headDim: 64).HeadDim, Is.EqualTo(64), "H·D may exceed modelDim");
        Assert.That(new AttentionConfig(32, 4, scale: 0f).Scale, Is.EqualTo(0f), "scale 0 is finite");
        Assert.That(new AttentionConfig(32, 4, scale: float.MaxValue).Scale, Is.EqualTo(float.MaxValue));
        Assert.DoesNotThrow(() => _ = new AttentionConfig(32, 4, windowLeft: 0, windowRight: 0));
        Assert.DoesNotThrow(() => _ = new AttentionConfig(32, 4, sparse: SparsePattern.Local, localBlocks: 0));
        Assert.DoesNotThrow(() => _ = new AttentionConfig(32, 4, sparse: SparsePattern.Random, randomBlocks: 0));
    }

    [Test]
    public void BuildBlockMaskUsesTheBuilders()
    {
        static void Same(BlockSparseMask? actual, BlockSparseMask expected, string what)
        {
            Assert.That(actual, Is.Not.Null, what);
            Assert.That((actual!.Heads, actual.QueryBlocks, actual.KeyBlocks, actual.BlockSizeQ, actual.BlockSizeK),
                Is.EqualTo((expected.Heads, expected.QueryBlocks, expected.KeyBlocks, expected.BlockSizeQ, expected.BlockSizeK)), what);
            Assert.That(actual.ToArray(), Is.EqualTo(expected.ToArray()), what);
        }

        Same(new AttentionConfig(32, 4, sparse: SparsePattern.Local, blockSize: 8, localBlocks: 2).BuildBlockMask(113, 50),
            BlockSparseMask.Local(113, 50, 8, 8, 2, 2), "local");
        Same(new AttentionConfig(32, 4, sparse: SparsePattern.Strided, blockSize: 4, localBlocks: 0, stride: 3).BuildBlockMask(17, 113),
            BlockSparseMask.Strided(17, 113, 4, 4, 0, 0, 3), "strided");
        var random = new AttentionConfig(32, 4, 2, sparse: SparsePattern.Random, blockSize: 8, randomBlocks: 2, randomSeed: 5).BuildBlockMask(113, 113);
        Same(random, BlockSparseMask.Random(113, 113, 8, 8, 2, 5, 4), "random, one layout per query head");
        Assert.That(random!.Heads, Is.EqualTo(4));
    }
}
