// Tolerance policy of DESIGN.md section 4, with failure messages that name the worst element.
using System.Globalization;

namespace FastAttention.Tests.Reference;

internal static class Tolerance
{
    /// <summary>fp32 policy: absolute part.</summary>
    public const double Fp32Abs = 1e-5;
    /// <summary>fp32 policy: relative part.</summary>
    public const double Fp32Rel = 1e-4;
    /// <summary>fp16/bf16 policy: allowed multiple of the naive error.</summary>
    public const double NaiveFactor = 2.0;
    /// <summary>fp16/bf16 policy: absolute slack.</summary>
    public const double NaiveAbs = 1e-5;

    /// <summary>
    /// fp32 policy: <c>|actual - expected| &lt;= abs + rel * |expected|</c> per element. An expected
    /// infinity must be matched exactly; NaN in <paramref name="actual"/> always fails.
    /// </summary>
    public static void AssertClose(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, string what, int[] dims,
        double abs = Fp32Abs, double rel = Fp32Rel)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), $"{what}: length");
        int worst = -1;
        double worstExcess = double.NegativeInfinity, maxErr = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double a = actual[i], e = expected[i];
            double err, excess;
            if (double.IsInfinity(e) || double.IsNaN(a) || double.IsInfinity(a))
            {
                err = a.Equals(e) ? 0 : double.PositiveInfinity;
                excess = err;
            }
            else
            {
                err = Math.Abs(a - e);
                excess = err - (abs + rel * Math.Abs(e));
            }
            maxErr = Math.Max(maxErr, err);
            if (excess > worstExcess)
            {
                worstExcess = excess;
                worst = i;
            }
        }
        if (worstExcess > 0)
        {
            double a = actual[worst], e = expected[worst];
            Assert.Fail($"{what}: worst element {FormatIndex(worst, dims)} = {F(a)}, reference {F(e)}, error {F(Math.Abs(a - e))} " +
                $"> allowed {F(abs + rel * Math.Abs(e))} ({abs:g3} + {rel:g3}·|ref|); max abs error over all {actual.Length} elements {F(maxErr)}.");
        }
    }

    /// <summary>
    /// fp16/bf16 policy: the largest absolute error of <paramref name="actual"/> vs the double reference
    /// must be at most <c>2 x</c> that of the naive in-precision computation, plus 1e-5.
    /// </summary>
    public static void AssertWithinNaive(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, ReadOnlySpan<float> naive,
        string what, int[] dims)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), $"{what}: length");
        int worst = -1, naiveWorst = -1;
        double maxErr = -1, naiveErr = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double e = expected[i];
            double err = double.IsNaN(actual[i]) || double.IsInfinity(actual[i]) ? double.PositiveInfinity : Math.Abs(actual[i] - e);
            if (err > maxErr)
            {
                maxErr = err;
                worst = i;
            }
            double nErr = Math.Abs(naive[i] - e);
            if (nErr > naiveErr)
            {
                naiveErr = nErr;
                naiveWorst = i;
            }
        }
        double bound = NaiveFactor * naiveErr + NaiveAbs;
        if (maxErr > bound)
        {
            Assert.Fail($"{what}: worst element {FormatIndex(worst, dims)} = {F(actual[worst])}, reference {F(expected[worst])}, " +
                $"error {F(maxErr)} > allowed {F(bound)} = {NaiveFactor} x naive-in-precision max error {F(naiveErr)} " +
                $"(at {FormatIndex(naiveWorst, dims)}) + {NaiveAbs:g3}.");
        }
    }

    /// <summary>
    /// <c>|actual - expected| &lt;= allowed</c> per element; NaN or infinity in <paramref name="actual"/> always fails.
    /// </summary>
    public static void AssertWithin(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected, ReadOnlySpan<double> allowed,
        string what, int[] dims)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), $"{what}: length");
        int worst = -1;
        double worstRatio = -1, maxErr = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double err = float.IsFinite(actual[i]) ? Math.Abs(actual[i] - expected[i]) : double.PositiveInfinity;
            maxErr = Math.Max(maxErr, err);
            double ratio = allowed[i] > 0 ? err / allowed[i] : err > 0 ? double.PositiveInfinity : 0;
            if (ratio > worstRatio)
            {
                worstRatio = ratio;
                worst = i;
            }
        }
        if (worstRatio > 1)
        {
            Assert.Fail($"{what}: worst element {FormatIndex(worst, dims)} = {F(actual[worst])}, reference {F(expected[worst])}, " +
                $"error {F(Math.Abs(actual[worst] - expected[worst]))} > allowed {F(allowed[worst])}; max abs error over all {actual.Length} elements {F(maxErr)}.");
        }
    }

    /// <summary>Every element of <paramref name="actual"/> equals <paramref name="expected"/> bit for bit (NaN never passes).</summary>
    public static void AssertBitwiseEqual(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, string what, int[] dims)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), $"{what}: length");
        for (int i = 0; i < actual.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(actual[i]) != BitConverter.SingleToInt32Bits(expected[i]) || float.IsNaN(actual[i]))
            {
                Assert.Fail($"{what}: first difference at {FormatIndex(i, dims)}: {F(actual[i])} vs {F(expected[i])}.");
            }
        }
    }

    /// <summary>|actual - expected| &lt;= <paramref name="abs"/> everywhere (infinities must match; NaN never passes).</summary>
    public static void AssertNear(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double abs, string what, int[] dims)
    {
        var e = new double[expected.Length];
        for (int i = 0; i < e.Length; i++) e[i] = expected[i];
        AssertClose(actual, e, what, dims, abs, 0);
    }

    public static void AssertNoNaN(ReadOnlySpan<float> values, string what, int[] dims)
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (float.IsNaN(values[i])) Assert.Fail($"{what}: NaN at {FormatIndex(i, dims)}.");
        }
    }

    /// <summary>Flat index to <c>[i0, i1, ...]</c> for row-major <paramref name="dims"/>.</summary>
    public static string FormatIndex(int flat, int[] dims)
    {
        if (flat < 0) return "[none]";
        var idx = new int[dims.Length];
        for (int k = dims.Length - 1; k >= 0; k--)
        {
            idx[k] = flat % dims[k];
            flat /= dims[k];
        }
        return "[" + string.Join(", ", idx) + "]";
    }

    private static string F(double x) => x.ToString("G9", CultureInfo.InvariantCulture);
}
