// The prelude smoke kernel's inputs and expected outputs, shared by the GPU test (Cuda/GpuRuntimeTests) and the
// emulated one (Emulation/EmulatedPreludeTests): one 16x16 · 16x8 mma through ldmatrix and ldmatrix.trans, the
// conversions, a 4-lane row reduction and 32-lane max / exp2-sum.

namespace FastAttention.Tests.Reference;

internal sealed class PreludeSmokeCase
{
    /// <summary>A <c>[m = 16][k = 16]</c>.</summary>
    public float[] A { get; }
    /// <summary>B <c>[k = 16][n = 8]</c>.</summary>
    public float[] Bkn { get; }
    /// <summary>B transposed, <c>[n = 8][k = 16]</c>.</summary>
    public float[] Bnk { get; }
    /// <summary>D = A·B, <c>[m = 16][n = 8]</c>, exact in fp32.</summary>
    public float[] D { get; }

    /// <summary>Multiples of 1/4 in [-2, 2]: exact in fp16 and bf16, and every product and sum is exact in fp32.</summary>
    public PreludeSmokeCase()
    {
        var rng = new Rng(42);
        float Next() => rng.Next(-8, 8) / 4f;
        A = Enumerable.Range(0, 16 * 16).Select(_ => Next()).ToArray();
        Bkn = Enumerable.Range(0, 16 * 8).Select(_ => Next()).ToArray();
        Bnk = new float[8 * 16];
        for (int k = 0; k < 16; k++) for (int n = 0; n < 8; n++) Bnk[n * 16 + k] = Bkn[k * 8 + n];
        D = new float[16 * 8];
        for (int m = 0; m < 16; m++) for (int n = 0; n < 8; n++) for (int k = 0; k < 16; k++) D[m * 8 + n] += A[m * 16 + k] * Bkn[k * 8 + n];
    }

    /// <summary>The kernel's outputs: both mma paths, the rounded D, the 16 row sums and (max, sum of exp2) over D.</summary>
    public void AssertOutputs<T>(float[] dNk, float[] dKn, float[] dRound, float[] rowSum, float[] stats) where T : unmanaged
    {
        Assert.That(dNk, Is.EqualTo(D), "ldmatrix + mma.sync");
        Assert.That(dKn, Is.EqualTo(D), "ldmatrix.trans + mma.sync");
        Assert.That(dRound, Is.EqualTo(D.Select(Num.Round<T>).ToArray()), "conversions round to nearest even");
        float[] expectedRowSums = Enumerable.Range(0, 16).Select(m => D.Skip(m * 8).Take(8).Sum()).ToArray();
        Assert.That(rowSum, Is.EqualTo(expectedRowSums), "4-lane reduction");
        float max = D.Max();
        double expSum = D.Sum(v => Math.Pow(2, v - max));
        Assert.That(stats[0], Is.EqualTo(max), "32-lane max");
        Assert.That(stats[1], Is.EqualTo(expSum).Within(1e-3).Percent, "32-lane sum of exp2");
    }
}
