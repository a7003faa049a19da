// CpuGemm.Linear (output = input·weightᵀ + bias, weight [out, in] as nn.Linear) over tensor views:
// contiguous, batched, sliced rows, transposed and broadcast inputs; and its argument checks.

using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gemm;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class LinearTests
{
    private const float Sentinel = GemmData.CSentinel;

    /// <summary>Reference <c>[rows, out]</c> of <c>x·Wᵀ + b</c> with x given by an element accessor.</summary>
    private static GemmReference Reference(Func<int, int, float> x, int rows, int inF, float[] w, float[]? bias, int outF)
    {
        var dense = new float[rows * inF];
        for (int i = 0; i < rows; i++)
        {
            for (int p = 0; p < inF; p++) dense[i * inF + p] = x(i, p);
        }
        return GemmReference.Compute(false, true, rows, outF, inF, 1f, dense, Math.Max(1, inF), w, Math.Max(1, inF), 0f, [], Math.Max(1, outF), bias);
    }

    [TestCase(1, 64, 32, true)]
    [TestCase(2, 96, 80, false)]
    [TestCase(17, 65, 129, true)]
    [TestCase(300, 127, 63, true)]
    public void Rank2MatchesReference(int rows, int inF, int outF, bool withBias)
    {
        var rng = new Rng(20);
        var x = rng.Normal<float>(rows * inF);
        var w = rng.Normal<float>(outF * inF);
        var b = withBias ? rng.Normal<float>(outF) : null;
        var y = new float[rows * outF];
        CpuGemm.Linear(Views.Strided(x, [rows, inF], [inF, 1]), w, b, Views.Strided(y, [rows, outF], [outF, 1]));
        var r = Reference((i, p) => x[i * inF + p], rows, inF, w, b, outF);
        Tolerance.AssertWithin(y, r.Expected, r.Allowed, $"linear [{rows}, {inF}] -> {outF}", [rows, outF]);
    }

    [Test]
    public void BatchedRank3AndRank1()
    {
        // [B, S, in] -> [B, S, out] is rows = B·S; a rank-1 [in] input is one row.
        var rng = new Rng(21);
        int bsz = 3, s = 7, inF = 48, outF = 40;
        var x = rng.Normal<float>(bsz * s * inF);
        var w = rng.Normal<float>(outF * inF);
        var b = rng.Normal<float>(outF);
        var y = new float[bsz * s * outF];
        CpuGemm.Linear(Views.Strided(x, [bsz, s, inF], [s * inF, inF, 1]), w, b, Views.Strided(y, [bsz, s, outF], [s * outF, outF, 1]));
        var r = Reference((i, p) => x[i * inF + p], bsz * s, inF, w, b, outF);
        Tolerance.AssertWithin(y, r.Expected, r.Allowed, "linear [3, 7, 48] -> 40", [bsz * s, outF]);

        var one = new float[outF];
        CpuGemm.Linear(new ReadOnlyTensorSpan<float>(x.AsSpan(0, inF)), w, b, new TensorSpan<float>(one.AsSpan()));
        Tolerance.AssertWithin(one, r.Expected.AsSpan(0, outF), r.Allowed.AsSpan(0, outF), "linear [48] -> 40", [outF]);
    }

    [Test]
    public void RowSlicedViewsReadAndWriteOnlyTheirColumns()
    {
        // Input: columns [0, 30) of a [20, 50] buffer whose other columns are NaN; output: columns
        // [0, 24) of a [20, 31] buffer whose other columns must keep the sentinel.
        var rng = new Rng(22);
        int rows = 20, inF = 30, outF = 24, xStride = 50, yStride = 31;
        var x = new float[rows * xStride];
        Array.Fill(x, float.NaN);
        for (int i = 0; i < rows; i++)
        {
            for (int p = 0; p < inF; p++) x[i * xStride + p] = (float)rng.NextNormal();
        }
        var w = rng.Normal<float>(outF * inF);
        var y = Enumerable.Repeat(Sentinel, rows * yStride).ToArray();
        CpuGemm.Linear(Views.Strided(x, [rows, inF], [xStride, 1]), w, default, Views.Strided(y, [rows, outF], [yStride, 1]));
        var r = Reference((i, p) => x[i * xStride + p], rows, inF, w, null, outF);
        var dense = new float[rows * outF];
        for (int i = 0; i < rows; i++)
        {
            Array.Copy(y, i * yStride, dense, i * outF, outF);
            for (int j = outF; j < yStride; j++) Assert.That(y[i * yStride + j], Is.EqualTo(Sentinel), $"output row {i} column {j} outside the view");
        }
        Tolerance.AssertWithin(dense, r.Expected, r.Allowed, "linear over row-sliced views", [rows, outF]);
    }

    [Test]
    public void TransposedInputViewIsReadInPlace()
    {
        // Memory [in, rows] viewed as [rows, in] (strides [1, rows]).
        var rng = new Rng(23);
        int rows = 33, inF = 70, outF = 50;
        var xt = rng.Normal<float>(inF * rows);
        var w = rng.Normal<float>(outF * inF);
        var b = rng.Normal<float>(outF);
        var y = new float[rows * outF];
        CpuGemm.Linear(Views.Strided(xt, [rows, inF], [1, rows]), w, b, Views.Strided(y, [rows, outF], [outF, 1]));
        var r = Reference((i, p) => xt[p * rows + i], rows, inF, w, b, outF);
        Tolerance.AssertWithin(y, r.Expected, r.Allowed, "linear over a transposed input view", [rows, outF]);
    }

    [Test]
    public void BroadcastInputRowGivesEqualRows()
    {
        // Stride 0 on the rows: every row is the same input row, so every output row is the same.
        var rng = new Rng(24);
        int rows = 9, inF = 40, outF = 33;
        var x = rng.Normal<float>(inF);
        var w = rng.Normal<float>(outF * inF);
        var y = new float[rows * outF];
        CpuGemm.Linear(new ReadOnlyTensorSpan<float>(x, [rows, inF], [0, 1]), w, default, Views.Strided(y, [rows, outF], [outF, 1]));
        var r = Reference((_, p) => x[p], rows, inF, w, null, outF);
        Tolerance.AssertWithin(y, r.Expected, r.Allowed, "linear over a broadcast input", [rows, outF]);
    }

    [Test]
    public void ZeroInputFeaturesGiveTheBias()
    {
        var b = new float[] { 1, -2, 3 };
        var y = new float[2 * 3];
        Array.Fill(y, float.NaN);
        CpuGemm.Linear(new ReadOnlyTensorSpan<float>(Array.Empty<float>(), [2, 0], [0, 0]), [], b, Views.Strided(y, [2, 3], [3, 1]));
        Assert.That(y, Is.EqualTo(new float[] { 1, -2, 3, 1, -2, 3 }));
    }

    // ---- argument checks: each names the argument and the numbers, and writes nothing ----

    private static void Rejects(Action<float[]> call, string paramName, params string[] messageParts)
    {
        var y = Enumerable.Repeat(Sentinel, 64).ToArray();
        var ex = Assert.Throws<ArgumentException>(() => call(y))!;
        Assert.Multiple(() =>
        {
            Assert.That(ex.ParamName, Is.EqualTo(paramName), $"ParamName of: {ex.Message}");
            foreach (string part in messageParts) Assert.That(ex.Message, Does.Contain(part), "message");
            Assert.That(y, Is.All.EqualTo(Sentinel), "output must be untouched");
        });
    }

    private static readonly float[] X = new float[6 * 4];
    private static readonly float[] W = new float[5 * 4];

    [Test]
    public void OutputRowsDifferFromInput() =>
        Rejects(y => CpuGemm.Linear(Views.Strided(X, [6, 4], [4, 1]), W, default, Views.Strided(y, [5, 5], [5, 1])),
            "output", "[5, 5]", "[6, 4]");

    [Test]
    public void OutputRankDiffersFromInput() =>
        Rejects(y => CpuGemm.Linear(Views.Strided(X, [6, 4], [4, 1]), W, default, Views.Strided(y, [2, 3, 5], [15, 5, 1])),
            "output", "[2, 3, 5]", "[6, 4]");

    [Test]
    public void WeightOfWrongLength() =>
        Rejects(y => CpuGemm.Linear(Views.Strided(X, [6, 4], [4, 1]), W.AsSpan(0, 19), default, Views.Strided(y, [6, 5], [5, 1])),
            "weight", "19 elements", "[5, 4]", "20");

    [Test]
    public void BiasOfWrongLength() =>
        Rejects(y => CpuGemm.Linear(Views.Strided(X, [6, 4], [4, 1]), W, new float[4], Views.Strided(y, [6, 5], [5, 1])),
            "bias", "4 elements", "out = 5");

    [Test]
    public void InputWithStridedLastDimension() =>
        Rejects(y => CpuGemm.Linear(new ReadOnlyTensorSpan<float>(new float[48], [3, 2, 4], [16, 8, 2]), W, default, Views.Strided(y, [3, 2, 5], [10, 5, 1])),
            "input", "stride 1", "[3, 2, 4]", "[16, 8, 2]");

    [Test]
    public void InputWhoseLeadingDimensionsDoNotCollapse() =>
        // Rows of 4 are 4 apart within a group of 2, but groups are 10 apart, not 8.
        Rejects(y => CpuGemm.Linear(new ReadOnlyTensorSpan<float>(new float[30], [3, 2, 4], [10, 4, 1]), W, default, Views.Strided(y, [3, 2, 5], [10, 5, 1])),
            "input", "dimension 0", "stride 10", "expected 8");

    [Test]
    public void OutputWithOverlappingRows() =>
        // System.Numerics.Tensors accepts only stride 0 as an overlapping layout; it broadcasts one row.
        Rejects(y => CpuGemm.Linear(Views.Strided(X, [6, 4], [4, 1]), W, default, new TensorSpan<float>(y, [6, 5], [0, 1])),
            "output", "overlap", "[6, 5]", "[0, 1]");

    [Test]
    public void TransposedOutputIsRejected() =>
        Rejects(y => CpuGemm.Linear(Views.Strided(X, [6, 4], [4, 1]), W, default, new TensorSpan<float>(y, [6, 5], [1, 6])),
            "output", "stride 1", "[1, 6]");

    [Test]
    public void BadParallelism()
    {
        var y = new float[30];
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            CpuGemm.Linear(Views.Strided(X, [6, 4], [4, 1]), W, default, Views.Strided(y, [6, 5], [5, 1]), maxDegreeOfParallelism: 0))!;
        Assert.That(ex.ParamName, Is.EqualTo("maxDegreeOfParallelism"));
    }
}
