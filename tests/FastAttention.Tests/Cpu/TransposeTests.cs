// The engine's AVX-512 block helpers on their own: Block16 is a scaled 16x16 transpose, SumEach16 gives the 16
// horizontal sums of 16 vectors in order. Skipped where AVX-512 is not available.

using System.Runtime.Intrinsics;
using FastAttention.Cpu.Engine;

namespace FastAttention.Tests.Cpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed unsafe class TransposeTests
{
    [Test]
    public void SumEach16_GivesEachVectorsSumInOrder()
    {
        if (!Transpose.Supported) Assert.Ignore("AVX-512 not available.");
        var rng = new Random(3);
        float[] data = new float[16 * 16];
        for (int i = 0; i < data.Length; i++) data[i] = (float)(rng.NextDouble() * 2 - 1) * (1 + i % 7);
        var v = new Vector512<float>[16];
        for (int r = 0; r < 16; r++) v[r] = Vector512.Create(data, 16 * r);
        float[] sums = new float[16];
        Transpose.SumEach16(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15])
            .CopyTo(sums);
        for (int r = 0; r < 16; r++)
        {
            double expected = 0;
            for (int i = 0; i < 16; i++) expected += data[16 * r + i];
            Assert.That(sums[r], Is.EqualTo(expected).Within(1e-5), $"sum of vector {r}");
        }
    }

    [Test]
    public void Block16_TransposesAndScalesEachDestinationRow()
    {
        if (!Transpose.Supported) Assert.Ignore("AVX-512 not available.");
        float[] source = new float[16 * 20], destination = new float[16 * 24], scale = new float[16];
        for (int i = 0; i < source.Length; i++) source[i] = i;
        for (int j = 0; j < 16; j++) scale[j] = j + 0.5f;
        fixed (float* s = source, d = destination, f = scale)
        {
            float** src = stackalloc float*[16];
            float** dst = stackalloc float*[16];
            for (int i = 0; i < 16; i++)
            {
                src[i] = s + 20 * i + 2;   // row stride 20, starting at column 2
                dst[i] = d + 24 * i + 3;   // row stride 24, starting at column 3
            }
            Transpose.Block16(src, dst, f);
        }
        for (int j = 0; j < 16; j++)
        {
            for (int i = 0; i < 16; i++)
            {
                Assert.That(destination[24 * j + 3 + i], Is.EqualTo(source[20 * i + 2 + j] * scale[j]), $"dst[{j}][{i}]");
            }
        }
    }
}
