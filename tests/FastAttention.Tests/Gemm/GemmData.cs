// Test operands of one sgemm call: padded storage that proves what is never read or written.

using System.Runtime.Intrinsics;
using FastAttention.Cpu.Engine;
using FastAttention.Cpu.Gemm;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gemm;

/// <summary>One sgemm case: <c>C[M, N] = Alpha·op(A)·op(B) + Beta·C (+ bias)</c>; leading dimensions are the widths plus <see cref="Pad"/>.</summary>
public sealed record GemmCase(bool TransA, bool TransB, int M, int N, int K, float Alpha = 1f, float Beta = 0f, bool Bias = false, int Pad = 0)
{
    public override string ToString() =>
        $"{(TransA ? "T" : "N")}{(TransB ? "T" : "N")} {M}x{N}x{K} alpha={Alpha} beta={Beta}{(Bias ? " +bias" : "")}{(Pad > 0 ? $" pad={Pad}" : "")}";
}

/// <summary>
/// Random operands for a <see cref="GemmCase"/>. The padding of A and B (between rows, past the
/// stored width) holds NaN, so reading it would poison C; the padding of C holds a sentinel that must
/// survive the call.
/// </summary>
internal sealed class GemmData
{
    public const float CSentinel = 12345f;

    public GemmCase Case { get; }
    public float[] A { get; }
    public float[] B { get; }
    /// <summary>C before the call (NaN in the matrix itself when <c>cFill</c> was NaN).</summary>
    public float[] C { get; }
    public float[]? Bias { get; }
    public int Lda { get; }
    public int Ldb { get; }
    public int Ldc { get; }

    public GemmData(GemmCase g, ulong seed, float? cFill = null)
    {
        Case = g;
        var rng = new Rng(seed);
        (int aRows, int aCols) = g.TransA ? (g.K, g.M) : (g.M, g.K);
        (int bRows, int bCols) = g.TransB ? (g.N, g.K) : (g.K, g.N);
        Lda = Math.Max(1, aCols + g.Pad);
        Ldb = Math.Max(1, bCols + g.Pad);
        Ldc = Math.Max(1, g.N + g.Pad);
        A = Matrix(rng, aRows, aCols, Lda, float.NaN, null);
        B = Matrix(rng, bRows, bCols, Ldb, float.NaN, null);
        C = Matrix(rng, g.M, g.N, Ldc, CSentinel, cFill);
        Bias = g.Bias ? rng.Normal<float>(g.N) : null;
    }

    public int[] Dims => [Case.M, Case.N];

    /// <summary>Runs the public API on a copy of C and returns the copy.</summary>
    public float[] Run(int maxDegreeOfParallelism = -1)
    {
        var g = Case;
        var c = (float[])C.Clone();
        CpuGemm.Sgemm(g.TransA, g.TransB, g.M, g.N, g.K, g.Alpha, A, Lda, B, Ldb, g.Beta, c, Ldc, Bias, maxDegreeOfParallelism);
        return c;
    }

    /// <summary>Vector widths this machine runs natively (the driver picks the widest; the others are run through the internal entry).</summary>
    public static IEnumerable<string> Widths()
    {
        if (Vector512.IsHardwareAccelerated) yield return "V512";
        if (Vector256.IsHardwareAccelerated) yield return "V256";
        yield return "V128";
    }

    /// <summary>Runs the driver with one vector width on a copy of C.</summary>
    public unsafe float[] RunWidth(string width, int parallelism)
    {
        var g = Case;
        var c = (float[])C.Clone();
        fixed (float* pa = A, pb = B, pc = c, pbias = Bias)
        {
            var p = new GemmProblem
            {
                TransA = g.TransA, TransB = g.TransB, M = g.M, N = g.N, K = g.K, Alpha = g.Alpha, Beta = g.Beta,
                A = pa, Lda = Lda, B = pb, Ldb = Ldb, C = pc, Ldc = Ldc, Bias = pbias, Parallelism = parallelism,
            };
            switch (width)
            {
                case "V512": SgemmDriver.Run<V512, Vector512<float>>(p); break;
                case "V256": SgemmDriver.Run<V256, Vector256<float>>(p); break;
                case "V128": SgemmDriver.Run<V128, Vector128<float>>(p); break;
                default: throw new ArgumentOutOfRangeException(nameof(width), width, "V512, V256 or V128");
            }
        }
        return c;
    }

    public GemmReference Reference()
    {
        var g = Case;
        return GemmReference.Compute(g.TransA, g.TransB, g.M, g.N, g.K, g.Alpha, A, Lda, B, Ldb, g.Beta, C, Ldc, Bias);
    }

    /// <summary>The <c>[M, N]</c> matrix out of a C buffer (row stride <see cref="Ldc"/>).</summary>
    public float[] Dense(float[] c)
    {
        var r = new float[Case.M * Case.N];
        for (int i = 0; i < Case.M; i++) Array.Copy(c, i * Ldc, r, i * Case.N, Case.N);
        return r;
    }

    /// <summary>Asserts the result matches the double reference within its bound and the padding of C is intact.</summary>
    public void AssertMatchesReference(float[] c, string what)
    {
        var reference = Reference();
        Tolerance.AssertWithin(Dense(c), reference.Expected, reference.Allowed, what, Dims);
        AssertPaddingUntouched(c, what);
    }

    public void AssertPaddingUntouched(float[] c, string what)
    {
        for (int i = 0; i < c.Length; i++)
        {
            bool inMatrix = i / Ldc < Case.M && i % Ldc < Case.N;
            if (!inMatrix && c[i] != CSentinel)
            {
                Assert.Fail($"{what}: C padding element {i} (row {i / Ldc}, column {i % Ldc}) was written: {c[i]}.");
            }
        }
    }

    /// <summary>
    /// Row-major <c>[rows, cols]</c> with row stride <paramref name="ld"/>: normal values (or
    /// <paramref name="fill"/>) in the matrix, <paramref name="padding"/> elsewhere.
    /// </summary>
    private static float[] Matrix(Rng rng, int rows, int cols, int ld, float padding, float? fill)
    {
        var m = new float[rows * ld];
        Array.Fill(m, padding);
        for (int i = 0; i < rows; i++)
        {
            for (int j = 0; j < cols; j++) m[i * ld + j] = fill ?? (float)rng.NextNormal();
        }
        return m;
    }
}
