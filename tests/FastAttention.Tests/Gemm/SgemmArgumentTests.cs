// Bad sgemm arguments: each is rejected with an ArgumentException-family exception that names the
// argument and the offending numbers, before anything is written to C.

namespace FastAttention.Tests.Gemm;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class SgemmArgumentTests
{
    private const float Sentinel = GemmData.CSentinel;

    /// <summary>A valid call (2x3 = 2x4 · 4x3, no transposes) with any argument replaceable.</summary>
    private sealed record Call
    {
        public bool TransA { get; init; }
        public bool TransB { get; init; }
        public int M { get; init; } = 2;
        public int N { get; init; } = 3;
        public int K { get; init; } = 4;
        public int ALength { get; init; } = 8;
        public int Lda { get; init; } = 4;
        public int BLength { get; init; } = 12;
        public int Ldb { get; init; } = 3;
        public int CLength { get; init; } = 6;
        public int Ldc { get; init; } = 3;
        public int BiasLength { get; init; }
        public int Parallelism { get; init; } = -1;

        public float[] C { get; } = Enumerable.Repeat(Sentinel, 64).ToArray();

        public void Invoke()
        {
            var a = Enumerable.Repeat(1f, Math.Max(ALength, 0)).ToArray();
            var b = Enumerable.Repeat(1f, Math.Max(BLength, 0)).ToArray();
            var bias = Enumerable.Repeat(1f, BiasLength).ToArray();
            CpuGemm.Sgemm(TransA, TransB, M, N, K, 1f, a, Lda, b, Ldb, 0f, C.AsSpan(0, CLength), Ldc, bias, Parallelism);
        }
    }

    private static void Rejects<TEx>(Call call, string paramName, params string[] messageParts) where TEx : ArgumentException
    {
        var ex = Assert.Throws<TEx>(call.Invoke)!;
        Assert.Multiple(() =>
        {
            Assert.That(ex.ParamName, Is.EqualTo(paramName), $"ParamName of: {ex.Message}");
            foreach (string part in messageParts) Assert.That(ex.Message, Does.Contain(part), "message");
            Assert.That(call.C, Is.All.EqualTo(Sentinel), "C must be untouched");
        });
    }

    [Test]
    public void ValidCallOfTheHarnessSucceeds()
    {
        var call = new Call();
        call.Invoke();
        Assert.That(call.C.AsSpan(0, 6).ToArray(), Is.All.EqualTo(4f), "C = 1·ones[2,4]·ones[4,3]");
        Assert.That(call.C.AsSpan(6).ToArray(), Is.All.EqualTo(Sentinel), "nothing past C");
    }

    [Test]
    public void NegativeM() => Rejects<ArgumentOutOfRangeException>(new Call { M = -1 }, "m", "-1", ">= 0");

    [Test]
    public void NegativeN() => Rejects<ArgumentOutOfRangeException>(new Call { N = -2 }, "n", "-2");

    [Test]
    public void NegativeK() => Rejects<ArgumentOutOfRangeException>(new Call { K = -3 }, "k", "-3");

    [Test]
    public void LdaSmallerThanK() => Rejects<ArgumentOutOfRangeException>(new Call { Lda = 3 }, "lda", "lda = 3", "[2, 4]", "max(1, 4)");

    [Test]
    public void LdaSmallerThanMWhenTransposed() =>
        // A stored [k, m] = [4, 2]: lda must be >= 2.
        Rejects<ArgumentOutOfRangeException>(new Call { TransA = true, Lda = 1 }, "lda", "lda = 1", "[4, 2]", "transposeA = true");

    [Test]
    public void LdbSmallerThanN() => Rejects<ArgumentOutOfRangeException>(new Call { Ldb = 2 }, "ldb", "ldb = 2", "[4, 3]");

    [Test]
    public void LdbSmallerThanKWhenTransposed() =>
        Rejects<ArgumentOutOfRangeException>(new Call { TransB = true, Ldb = 3 }, "ldb", "ldb = 3", "[3, 4]", "transposeB = true");

    [Test]
    public void LdcSmallerThanN() => Rejects<ArgumentOutOfRangeException>(new Call { Ldc = 2 }, "ldc", "ldc = 2", "[2, 3]");

    [Test]
    public void LdcZeroWithEmptyC() =>
        Rejects<ArgumentOutOfRangeException>(new Call { N = 0, BLength = 0, Ldb = 1, CLength = 0, Ldc = 0 }, "ldc", "ldc = 0", "max(1, 0)");

    [Test]
    public void ATooShort() => Rejects<ArgumentException>(new Call { ALength = 7 }, "a", "7 elements", "[2, 4]", "lda = 4", "= 8");

    [Test]
    public void ATooShortForItsLeadingDimension() =>
        // Rows 6 apart: (2 - 1)·6 + 4 = 10 elements needed.
        Rejects<ArgumentException>(new Call { Lda = 6, ALength = 9 }, "a", "9 elements", "lda = 6", "= 10");

    [Test]
    public void BTooShort() => Rejects<ArgumentException>(new Call { BLength = 11 }, "b", "11 elements", "[4, 3]", "= 12");

    [Test]
    public void BTooShortWhenTransposed() =>
        Rejects<ArgumentException>(new Call { TransB = true, Ldb = 4, BLength = 11 }, "b", "11 elements", "[3, 4]", "= 12");

    [Test]
    public void CTooShort() => Rejects<ArgumentException>(new Call { CLength = 5 }, "c", "5 elements", "[2, 3]", "= 6");

    [Test]
    public void CTooShortForItsLeadingDimension() =>
        Rejects<ArgumentException>(new Call { Ldc = 5, CLength = 7 }, "c", "7 elements", "ldc = 5", "= 8");

    [TestCase(2)]
    [TestCase(4)]
    public void BiasOfWrongLength(int length) =>
        Rejects<ArgumentException>(new Call { BiasLength = length }, "bias", $"{length} elements", "n = 3");

    [TestCase(0)]
    [TestCase(-2)]
    public void BadParallelism(int p) =>
        Rejects<ArgumentOutOfRangeException>(new Call { Parallelism = p }, "maxDegreeOfParallelism", $"got {p}");

    [Test]
    public void ShapesAreCheckedBeforeLengths()
    {
        // Both m and the A length are wrong: m is reported (dimensions first, then leading dims, then spans).
        Rejects<ArgumentOutOfRangeException>(new Call { M = -1, ALength = 0 }, "m", "-1");
    }
}
