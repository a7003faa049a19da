// Head statistics on hand-built probability matrices whose answers are known in closed form, and the classification rules.
using FastAttention.Analysis.Statistics;

namespace FastAttention.Tests.Analysis;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class HeadStatisticsTests
{
    private const int N = 8;
    private const double Tol = 1e-9;

    private static float[] Map(int n, Func<int, int, double> p, int stride = 0)
    {
        stride = stride == 0 ? n : stride;
        var m = new float[n * stride];
        Array.Fill(m, float.NaN); // padding columns must never be read
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++) m[i * stride + j] = (float)p(i, j);
        }
        return m;
    }

    private static bool[] SpecialEnds(int n) => [.. Enumerable.Range(0, n).Select(j => j == 0 || j == n - 1)];

    [Test]
    public void UniformIsBroadWithMaximalEntropy()
    {
        var s = HeadStatistics.Compute(Map(N, (_, _) => 1.0 / N), N, N, SpecialEnds(N));
        Assert.Multiple(() =>
        {
            Assert.That(s.Entropy, Is.EqualTo(Math.Log(N)).Within(1e-6));
            Assert.That(s.NormalizedEntropy, Is.EqualTo(1).Within(1e-6));
            Assert.That(s.EffectiveKeys, Is.EqualTo(N).Within(1e-5));
            // mean over i of (1/n) Σ_j |i - j| = (n² - 1) / (3n)
            Assert.That(s.MeanDistance, Is.EqualTo((N * N - 1) / (3.0 * N)).Within(1e-6));
            Assert.That(s.Sparsity, Is.Zero);
            Assert.That(s.SpecialFocus, Is.EqualTo(2.0 / N).Within(1e-6));
            Assert.That(s.PreviousFocus, Is.EqualTo(1.0 / N).Within(1e-6));
            Assert.That(s.SelfFocus, Is.EqualTo(1.0 / N).Within(1e-6));
            Assert.That(s.NextFocus, Is.EqualTo(1.0 / N).Within(1e-6));
            Assert.That(s.Kind, Is.EqualTo(HeadKind.Broad));
        });
    }

    [Test]
    public void OneHotOnClsIsASpecialTokenHead()
    {
        var s = HeadStatistics.Compute(Map(N, (_, j) => j == 0 ? 1 : 0), N, N, SpecialEnds(N), layer: 3, head: 5);
        Assert.Multiple(() =>
        {
            Assert.That(s.Entropy, Is.Zero);
            Assert.That(s.NormalizedEntropy, Is.Zero);
            Assert.That(s.EffectiveKeys, Is.EqualTo(1).Within(Tol));
            Assert.That(s.MeanDistance, Is.EqualTo((N - 1) / 2.0).Within(Tol)); // mean of i
            Assert.That(s.Sparsity, Is.EqualTo((N * N - N) / (double)(N * N)).Within(Tol));
            Assert.That(s.SpecialFocus, Is.EqualTo(1).Within(Tol));
            Assert.That(s.PreviousFocus, Is.EqualTo(1.0 / (N - 1)).Within(Tol)); // only row 1's previous key is column 0
            Assert.That(s.SelfFocus, Is.EqualTo(1.0 / N).Within(Tol));
            Assert.That(s.Kind, Is.EqualTo(HeadKind.SpecialToken));
            Assert.That((s.Layer, s.Head, s.Tokens), Is.EqualTo((3, 5, N)));
        });
        // The same map without special tokens marked: focused, not local -> mixed.
        Assert.That(HeadStatistics.Compute(Map(N, (_, j) => j == 0 ? 1 : 0), N, N).Kind, Is.EqualTo(HeadKind.Mixed));
    }

    [Test]
    public void DiagonalIsPositionalWithZeroDistance()
    {
        var s = HeadStatistics.Compute(Map(N, (i, j) => i == j ? 1 : 0), N, N, SpecialEnds(N));
        Assert.Multiple(() =>
        {
            Assert.That(s.Entropy, Is.Zero);
            Assert.That(s.EffectiveKeys, Is.EqualTo(1).Within(Tol));
            Assert.That(s.MeanDistance, Is.Zero);
            Assert.That(s.SelfFocus, Is.EqualTo(1).Within(Tol));
            Assert.That(s.PreviousFocus, Is.Zero);
            Assert.That(s.NextFocus, Is.Zero);
            Assert.That(s.SpecialFocus, Is.EqualTo(2.0 / N).Within(Tol)); // rows 0 and n-1 attend to themselves, special
            Assert.That(s.Sparsity, Is.EqualTo((N - 1) / (double)N).Within(Tol));
            Assert.That(s.Kind, Is.EqualTo(HeadKind.Positional));
        });
    }

    [Test]
    public void PreviousTokenMapIsAPreviousTokenHead()
    {
        // Row 0 has no previous token and attends to itself.
        var s = HeadStatistics.Compute(Map(N, (i, j) => j == Math.Max(0, i - 1) ? 1 : 0), N, N, SpecialEnds(N));
        Assert.Multiple(() =>
        {
            Assert.That(s.PreviousFocus, Is.EqualTo(1).Within(Tol));
            Assert.That(s.SelfFocus, Is.EqualTo(1.0 / N).Within(Tol));
            Assert.That(s.MeanDistance, Is.EqualTo((N - 1) / (double)N).Within(Tol));
            Assert.That(s.Entropy, Is.Zero);
            Assert.That(s.Kind, Is.EqualTo(HeadKind.PreviousToken));
        });
    }

    [Test]
    public void NextTokenMapIsPositional()
    {
        var s = HeadStatistics.Compute(Map(N, (i, j) => j == Math.Min(N - 1, i + 1) ? 1 : 0), N, N);
        Assert.Multiple(() =>
        {
            Assert.That(s.NextFocus, Is.EqualTo(1).Within(Tol));
            Assert.That(s.Kind, Is.EqualTo(HeadKind.Positional));
        });
    }

    [Test]
    public void CausalUniformRowsHaveNormalisedEntropyOneAndNoSparsity()
    {
        // Row i spreads over its i + 1 visible keys.
        var s = HeadStatistics.Compute(Map(N, (i, j) => j <= i ? 1.0 / (i + 1) : 0), N, N, causal: true);
        double entropy = Enumerable.Range(1, N).Average(k => Math.Log(k));
        Assert.Multiple(() =>
        {
            Assert.That(s.Entropy, Is.EqualTo(entropy).Within(1e-6));
            Assert.That(s.NormalizedEntropy, Is.EqualTo(1).Within(1e-6));
            Assert.That(s.EffectiveKeys, Is.EqualTo((N + 1) / 2.0).Within(1e-5));
            Assert.That(s.Sparsity, Is.Zero); // masked (future) keys are not counted
            Assert.That(s.NextFocus, Is.Zero);
        });
    }

    [Test]
    public void PaddedStrideUsesOnlyTheValidTokens()
    {
        const int stride = 13;
        var s = HeadStatistics.Compute(Map(N, (_, _) => 1.0 / N, stride), stride, N);
        Assert.Multiple(() =>
        {
            Assert.That(s.Entropy, Is.EqualTo(Math.Log(N)).Within(1e-6));
            Assert.That(double.IsFinite(s.MeanDistance), Is.True);
            Assert.That(s.Kind, Is.EqualTo(HeadKind.Broad));
        });
    }

    [TestCase(0.6, 0.6, 0.0, 0.0, 1.0, HeadKind.SpecialToken)]
    [TestCase(0.4, 0.5, 0.0, 0.0, 1.0, HeadKind.PreviousToken)]
    [TestCase(0.4, 0.2, 0.2, 0.1, 1.0, HeadKind.Positional)]
    [TestCase(0.4, 0.1, 0.1, 0.1, 0.75, HeadKind.Broad)]
    [TestCase(0.4, 0.1, 0.1, 0.1, 0.74, HeadKind.Mixed)]
    public void ClassificationRulesApplyInOrder(double special, double previous, double self, double next, double normalizedEntropy, HeadKind expected) =>
        Assert.That(HeadStatistics.Classify(special, previous, self, next, normalizedEntropy), Is.EqualTo(expected));

    [Test]
    public void BadArgumentsThrow()
    {
        var map = Map(N, (_, _) => 1.0 / N);
        Assert.Multiple(() =>
        {
            Assert.That(() => HeadStatistics.Compute(map, N, 0), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("tokens"));
            Assert.That(() => HeadStatistics.Compute(map, N, N + 1), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("tokens"));
            Assert.That(() => HeadStatistics.Compute(map.AsSpan(1).ToArray(), N, N), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("probabilities"));
            Assert.That(() => HeadStatistics.Compute(map, N, N, new bool[3]), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("isSpecial"));
        });
    }
}
