// TensorLayouts: the BSHD views the entry points take, and AttentionShape's argument reading.

namespace FastAttention.Tests.Types;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class TensorLayoutsTests
{
    private static float[] Iota(int n) => [.. Enumerable.Range(0, n).Select(i => (float)i)];

    // Shapes with a length-1 dimension are the common case (batch 1, one head, one query):
    // System.Numerics.Tensors 10 rejects a non-zero stride on such a dimension, so the views must give it stride 0.
    [TestCase(2, 3, 4, 5)]
    [TestCase(1, 3, 4, 5)]
    [TestCase(2, 1, 4, 5)]
    [TestCase(2, 3, 1, 5)]
    [TestCase(1, 1, 1, 8)]
    public void BshdIsContiguousBshd(int b, int s, int h, int d)
    {
        var data = Iota(b * s * h * d + 3);
        var t = TensorLayouts.Bshd<float>(data, b, s, h, d);
        Assert.That(t.Lengths.ToArray(), Is.EqualTo(new nint[] { b, s, h, d }));
        for (int ib = 0; ib < b; ib++)
            for (int i = 0; i < s; i++)
                for (int ih = 0; ih < h; ih++)
                    for (int id = 0; id < d; id++)
                        Assert.That(t[[ib, i, ih, id]], Is.EqualTo((float)(((ib * s + i) * h + ih) * d + id)));
    }

    [TestCase(2, 3, 4, 5)]
    [TestCase(1, 3, 4, 5)]
    [TestCase(2, 3, 1, 5)]
    [TestCase(1, 7, 1, 16)]
    public void BhsdAsBshdReadsBhsdMemory(int b, int s, int h, int d)
    {
        var data = Iota(b * s * h * d);
        var t = TensorLayouts.BhsdAsBshd<float>(data, b, s, h, d);
        Assert.That(t.Lengths.ToArray(), Is.EqualTo(new nint[] { b, s, h, d }));
        for (int ib = 0; ib < b; ib++)
            for (int i = 0; i < s; i++)
                for (int ih = 0; ih < h; ih++)
                    for (int id = 0; id < d; id++)
                        Assert.That(t[[ib, i, ih, id]], Is.EqualTo((float)(((ib * h + ih) * s + i) * d + id)));
    }

    [TestCase(2, 3, 4)]
    [TestCase(1, 3, 4)]
    [TestCase(2, 1, 4)]
    public void BhsIsContiguous(int b, int h, int s)
    {
        var data = Iota(b * h * s);
        var t = TensorLayouts.Bhs(data, b, h, s);
        Assert.That(t.Lengths.ToArray(), Is.EqualTo(new nint[] { b, h, s }));
        Assert.That(t[[b - 1, h - 1, s - 1]], Is.EqualTo((float)(b * h * s - 1)));
    }

    [Test]
    public void ShortDataIsRejected()
    {
        var ex = Assert.Throws<ArgumentException>(() => TensorLayouts.Bshd<float>(new float[59], 2, 3, 2, 5))!;
        Assert.That(ex.ParamName, Is.EqualTo("data"));
        Assert.That(ex.Message, Does.Contain("59").And.Contain("60"));
        Assert.Throws<ArgumentException>(() => TensorLayouts.BhsdAsBshd<float>(new float[59], 2, 3, 2, 5));
        Assert.Throws<ArgumentException>(() => TensorLayouts.Bhs(new float[5], 2, 3, 1));
    }

    [Test]
    public void AttentionShapeFromTensors()
    {
        var q = new float[2 * 5 * 8 * 16];
        var k = new float[2 * 9 * 2 * 16];
        var shape = AttentionShape.FromTensors<float>(
            Reference.Views.Bshd(q, 2, 5, 8, 16), Reference.Views.Bshd(k, 2, 9, 2, 16), Reference.Views.Bshd(k, 2, 9, 2, 16));
        Assert.That(shape, Is.EqualTo(new AttentionShape(2, 5, 9, 8, 2, 16)));
        Assert.That(shape.GroupSize, Is.EqualTo(4));
        Assert.That(shape.Flops(causal: false), Is.EqualTo(4.0 * 2 * 8 * 5 * 9 * 16));
        Assert.That(shape.Flops(causal: true), Is.EqualTo(2.0 * 2 * 8 * 5 * 9 * 16));
    }
}
