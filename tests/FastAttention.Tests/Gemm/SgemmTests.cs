// CpuGemm.Sgemm vs a double-precision reference, and the properties that hold whatever the numbers:
// beta = 0 never reads C, alpha = 0 never reads A/B, k = 0 still applies beta and bias, padding is
// neither read nor written, every vector width and every thread count give the same answer.
//
// The covering set below is not a cartesian product: each row was chosen so that every transpose
// pair, odd sizes (1, 2, 5, 17, 63, 65, 127, 129, 300), both sides of each blocking edge (a partial
// 2W-column panel, a 1..5-row strip, several k blocks, several column blocks, two A blocks of rows,
// the few-row path for M <= 2) and each alpha/beta/bias/leading-dimension variation appear.

using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gemm;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class SgemmTests
{
    private static readonly GemmCase[] Cases =
    [
        // Degenerate and few-row (decode) shapes: the unpacked path (M <= 2), both B layouts.
        new(false, false, 1, 1, 1),
        new(false, true, 1, 300, 129, Bias: true),
        new(false, false, 2, 65, 127, Alpha: 0.5f, Beta: 1f, Pad: 3),
        new(true, true, 2, 17, 5, Alpha: -1f, Beta: 0.5f, Bias: true, Pad: 1),
        new(true, false, 1, 129, 63, Alpha: 2f, Beta: -1f, Bias: true, Pad: 2),
        new(false, true, 2, 63, 1, Beta: 1f),

        // Packed path: row tails (3, 5 rows), partial column panels, odd sizes, every transpose pair.
        new(false, false, 3, 17, 2, Beta: 1f, Bias: true),
        new(false, true, 5, 17, 63, Alpha: 0.5f),
        new(true, false, 17, 63, 65, Beta: -1f, Pad: 5),
        new(true, true, 63, 65, 17, Alpha: -1f, Bias: true),
        new(false, false, 65, 127, 129, Beta: 0.5f, Pad: 1),
        new(false, true, 127, 129, 2, Bias: true, Pad: 2),
        new(true, false, 129, 5, 300, Alpha: 2f, Beta: 1f),
        new(true, true, 300, 1, 65),
        new(false, false, 300, 300, 127, Alpha: 0.5f, Beta: 2f, Bias: true),

        // Several k blocks (513 = 2 x 257, 1100 = 3 blocks), several column blocks (600 columns).
        new(false, true, 127, 129, 513, Beta: 1f, Bias: true),
        new(true, false, 17, 2, 1100, Alpha: -1f, Beta: 0.5f),
        new(false, false, 65, 600, 300, Bias: true, Pad: 7),
        new(true, true, 63, 600, 513, Alpha: 0.5f, Beta: -1f),

        // Two A blocks of rows (M > 3072) with a thin product.
        new(false, false, 3100, 33, 7, Beta: 1f, Bias: true),
        new(true, true, 3100, 17, 5, Alpha: 2f),
    ];

    private static IEnumerable<TestCaseData> Source() =>
        Cases.Select((c, i) => new TestCaseData(c, i).SetName($"Sgemm({c})"));

    [TestCaseSource(nameof(Source))]
    public void MatchesDoubleReference(GemmCase c, int index)
    {
        var data = new GemmData(c, 100 + (ulong)index);
        data.AssertMatchesReference(data.Run(), c.ToString());
    }

    /// <summary>The widths the driver does not pick on this machine run through the internal entry point.</summary>
    private static IEnumerable<TestCaseData> WidthSource() =>
        from width in GemmData.Widths()
        from index in new[] { 1, 3, 7, 9, 12, 15, 17 }
        select new TestCaseData(width, Cases[index], index).SetName($"Width({width}, {Cases[index]})");

    [TestCaseSource(nameof(WidthSource))]
    public void EveryVectorWidthMatchesReference(string width, GemmCase c, int index)
    {
        var data = new GemmData(c, 100 + (ulong)index);
        data.AssertMatchesReference(data.RunWidth(width, Environment.ProcessorCount), $"{width} {c}");
    }

    [Test]
    public void BetaZeroNeverReadsC(
        [Values(false, true)] bool transA,
        [Values(false, true)] bool transB,
        [Values(1, 2, 7, 70)] int m,
        [Values(false, true)] bool bias)
    {
        // C is NaN inside the matrix: any read of it (even 0·NaN) would show.
        var c = new GemmCase(transA, transB, m, 45, 33, Alpha: 0.75f, Beta: 0f, Bias: bias, Pad: 2);
        var data = new GemmData(c, 7, cFill: float.NaN);
        data.AssertMatchesReference(data.Run(), c + " over NaN C");
    }

    [TestCase(false, false)]
    [TestCase(true, true)]
    public void KZeroScalesCAndAddsBias(bool transA, bool transB)
    {
        foreach (float beta in new[] { 0f, 1f, -0.5f })
        {
            var c = new GemmCase(transA, transB, 7, 9, 0, Alpha: 3f, Beta: beta, Bias: true, Pad: 1);
            var data = new GemmData(c, 8, cFill: beta == 0 ? float.NaN : null);
            var result = data.Run();
            data.AssertMatchesReference(result, c.ToString());
            for (int i = 0; i < c.M; i++)
            {
                for (int j = 0; j < c.N; j++)
                {
                    // Exactly beta·C + bias, rounded once each.
                    float start = beta == 0 ? 0f : beta * data.C[i * data.Ldc + j];
                    Assert.That(result[i * data.Ldc + j], Is.EqualTo(start + data.Bias![j]), $"k = 0, beta = {beta}, C[{i}, {j}]");
                }
            }
        }
    }

    [Test]
    public void KZeroAcceptsEmptyAAndB()
    {
        var c = new float[] { 1, 2, 3, 4, 5, 6 };
        CpuGemm.Sgemm(false, false, 2, 3, 0, 1f, [], 1, [], 3, 2f, c, 3);
        Assert.That(c, Is.EqualTo(new float[] { 2, 4, 6, 8, 10, 12 }));
    }

    [TestCase(1)]
    [TestCase(40)]
    public void AlphaZeroNeverReadsAOrB(int m)
    {
        var c = new GemmCase(false, true, m, 20, 30, Alpha: 0f, Beta: 0.5f, Bias: true);
        var data = new GemmData(c, 9);
        Array.Fill(data.A, float.NaN);
        Array.Fill(data.B, float.NaN);
        var result = data.Run();
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < c.N; j++)
            {
                Assert.That(result[i * data.Ldc + j], Is.EqualTo(0.5f * data.C[i * data.Ldc + j] + data.Bias![j]), $"alpha = 0, C[{i}, {j}]");
            }
        }
    }

    [TestCase(0, 5, 3)]
    [TestCase(4, 0, 3)]
    [TestCase(0, 0, 0)]
    public void EmptyCIsANoOp(int m, int n, int k)
    {
        var a = new float[Math.Max(1, m * k)];
        var b = new float[Math.Max(1, k * n)];
        var c = new float[] { GemmData.CSentinel };
        CpuGemm.Sgemm(false, false, m, n, k, 1f, a.AsSpan(0, m * k), Math.Max(1, k), b.AsSpan(0, k * n), Math.Max(1, n), 0f,
            c.AsSpan(0, 0), Math.Max(1, n), default);
        Assert.That(c[0], Is.EqualTo(GemmData.CSentinel));
    }

    [TestCase(false, false, 300, 300, 300)]
    [TestCase(true, true, 129, 600, 513)]
    [TestCase(false, true, 2, 1000, 700)]
    [TestCase(true, false, 1, 1000, 700)]
    [TestCase(false, true, 3100, 40, 9)]
    public void ThreadCountDoesNotChangeResults(bool transA, bool transB, int m, int n, int k)
    {
        var c = new GemmCase(transA, transB, m, n, k, Alpha: 0.5f, Beta: 1f, Bias: true, Pad: 1);
        var data = new GemmData(c, 10);
        var one = data.Run(1);
        foreach (int p in new[] { 2, 3, 5, -1 })
        {
            Tolerance.AssertBitwiseEqual(data.Run(p), one, $"{c}: {p} threads vs 1", [one.Length]);
        }
    }

    [Test]
    public void LeadingDimensionsAreHonoured()
    {
        // The same product with tight and with padded storage gives identical bits.
        var tight = new GemmData(new GemmCase(true, false, 70, 90, 110, Beta: 0.5f, Bias: true), 11);
        var padded = new GemmData(new GemmCase(true, false, 70, 90, 110, Beta: 0.5f, Bias: true, Pad: 13), 11);
        Copy(tight.A, tight.Lda, padded.A, padded.Lda, 110, 70);
        Copy(tight.B, tight.Ldb, padded.B, padded.Ldb, 110, 90);
        Copy(tight.C, tight.Ldc, padded.C, padded.Ldc, 70, 90);
        Array.Copy(tight.Bias!, padded.Bias!, 90);
        var a = tight.Dense(tight.Run());
        var paddedResult = padded.Run();
        Tolerance.AssertBitwiseEqual(padded.Dense(paddedResult), a, "padded vs tight storage", [70, 90]);
        padded.AssertPaddingUntouched(paddedResult, "padded");

        static void Copy(float[] from, int ldFrom, float[] to, int ldTo, int rows, int cols)
        {
            for (int i = 0; i < rows; i++) Array.Copy(from, i * ldFrom, to, i * ldTo, cols);
        }
    }

    [Test]
    public void ExactOnSmallIntegers()
    {
        // Integer operands with exact fp32 products and sums: every path must give the exact answer.
        foreach (var c in new[] { new GemmCase(false, true, 2, 70, 300), new GemmCase(true, false, 37, 70, 600, Beta: 1f, Bias: true) })
        {
            var data = new GemmData(c, 12);
            var rng = new Rng(13);
            Fill(data.A, rng);
            Fill(data.B, rng);
            Fill(data.C, rng);
            Fill(data.Bias, rng);
            var reference = data.Reference();
            var actual = data.Dense(data.Run());
            for (int i = 0; i < actual.Length; i++)
            {
                Assert.That((double)actual[i], Is.EqualTo(reference.Expected[i]), $"{c}: element {Tolerance.FormatIndex(i, data.Dims)}");
            }
        }

        static void Fill(float[]? x, Rng rng)
        {
            if (x is null) return;
            for (int i = 0; i < x.Length; i++) x[i] = float.IsNaN(x[i]) || x[i] == GemmData.CSentinel ? x[i] : rng.Next(-8, 8);
        }
    }
}
