// Public fp32 GEMM of the CPU engine (the projection sgemm) and the Linear layer built on it.
using System.Numerics.Tensors;
using FastAttention.Cpu.Engine;
using FastAttention.Cpu.Gemm;

namespace FastAttention.Cpu;

/// <summary>
/// Single-precision matrix multiply on the CPU: blocked and packed for the caches, multithreaded, on
/// the same register-blocked FMA micro-kernel as the attention engine (AVX-512 where the processor
/// has it, else AVX2/FMA, else 128-bit SIMD). Row-major storage throughout, as in C# arrays and
/// PyTorch tensors.
/// </summary>
/// <remarks>
/// Results do not depend on the thread count: every element is computed with the same operations in
/// the same order whatever <c>maxDegreeOfParallelism</c> is. Accumulation is fp32 (as in BLAS sgemm),
/// in k blocks of up to 512 products.
/// </remarks>
public static class CpuGemm
{
    /// <summary>
    /// <c>C = alpha·op(A)·op(B) + beta·C</c>, plus <paramref name="bias"/>[j] added to every row's column j
    /// when given. op(X) is X or Xᵀ. All matrices are row-major with a leading dimension (the distance
    /// between the starts of consecutive rows, in elements), as BLAS <c>cblas_sgemm(CblasRowMajor, ...)</c>.
    /// </summary>
    /// <param name="transposeA">op(A) = Aᵀ: A is stored <c>[k, m]</c>; otherwise A is stored <c>[m, k]</c>.</param>
    /// <param name="transposeB">op(B) = Bᵀ: B is stored <c>[n, k]</c> (a PyTorch Linear weight <c>[out, in]</c> for <c>X·Wᵀ</c>); otherwise <c>[k, n]</c>.</param>
    /// <param name="m">Rows of op(A) and C (&gt;= 0).</param>
    /// <param name="n">Columns of op(B) and C (&gt;= 0).</param>
    /// <param name="k">Columns of op(A), rows of op(B) (&gt;= 0). With k = 0 the product is zero and C = beta·C (+ bias).</param>
    /// <param name="alpha">Multiplier of the product; 0 means A and B are not read.</param>
    /// <param name="a">A in row-major storage, at least <c>(rows - 1)·lda + columns</c> elements of the stored shape.</param>
    /// <param name="lda">Leading dimension of A: at least the stored column count (k, or m when transposed), and at least 1.</param>
    /// <param name="b">B in row-major storage, at least <c>(rows - 1)·ldb + columns</c> elements of the stored shape.</param>
    /// <param name="ldb">Leading dimension of B: at least the stored column count (n, or k when transposed), and at least 1.</param>
    /// <param name="beta">Multiplier of the existing C; 0 means C is not read (NaN or garbage in C does not matter).</param>
    /// <param name="c">C <c>[m, n]</c>, at least <c>(m - 1)·ldc + n</c> elements; must not share elements with A or B. Elements between rows (past column n) are not touched.</param>
    /// <param name="ldc">Leading dimension of C: at least max(1, n).</param>
    /// <param name="bias">Optional per-column bias of length n; empty (the default) for none.</param>
    /// <param name="maxDegreeOfParallelism">Worker threads at most; -1 = all processors. Small products use fewer.</param>
    /// <exception cref="ArgumentOutOfRangeException">
    /// <paramref name="m"/>, <paramref name="n"/> or <paramref name="k"/> is negative; a leading dimension is
    /// smaller than its matrix's stored column count (or than 1); <paramref name="maxDegreeOfParallelism"/> is 0 or
    /// less than -1.
    /// </exception>
    /// <exception cref="ArgumentException">
    /// <paramref name="a"/>, <paramref name="b"/> or <paramref name="c"/> is too short for its matrix, or
    /// <paramref name="bias"/> is neither empty nor of length <paramref name="n"/>. The message names the numbers;
    /// nothing is written.
    /// </exception>
    public static unsafe void Sgemm(bool transposeA, bool transposeB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc,
        ReadOnlySpan<float> bias = default, int maxDegreeOfParallelism = -1)
    {
        RequireNonNegative(m, nameof(m));
        RequireNonNegative(n, nameof(n));
        RequireNonNegative(k, nameof(k));
        // Stored shapes: A [m, k] or [k, m]; B [k, n] or [n, k]; C [m, n].
        (int aRows, int aCols) = transposeA ? (k, m) : (m, k);
        (int bRows, int bCols) = transposeB ? (n, k) : (k, n);
        RequireLeadingDimension(lda, nameof(lda), "A", aRows, aCols, nameof(transposeA), transposeA);
        RequireLeadingDimension(ldb, nameof(ldb), "B", bRows, bCols, nameof(transposeB), transposeB);
        RequireLeadingDimension(ldc, nameof(ldc), "C", m, n, null, false);
        RequireLength(a.Length, nameof(a), "A", aRows, aCols, lda, nameof(lda));
        RequireLength(b.Length, nameof(b), "B", bRows, bCols, ldb, nameof(ldb));
        RequireLength(c.Length, nameof(c), "C", m, n, ldc, nameof(ldc));
        if (!bias.IsEmpty && bias.Length != n)
        {
            throw new ArgumentException($"bias has {bias.Length} elements; it must be empty or hold n = {n} (one per column of C).", nameof(bias));
        }
        int parallelism = ResolveParallelism(maxDegreeOfParallelism);

        fixed (float* pa = a, pb = b, pc = c, pbias = bias)
        {
            SgemmDriver.Run(new GemmProblem
            {
                TransA = transposeA, TransB = transposeB, M = m, N = n, K = k, Alpha = alpha, Beta = beta,
                A = pa, Lda = lda, B = pb, Ldb = ldb, C = pc, Ldc = ldc, Bias = bias.IsEmpty ? null : pbias,
                Parallelism = parallelism,
            });
        }
    }

    /// <summary>
    /// A linear layer as PyTorch's <c>torch.nn.functional.linear</c>: <c>output = input·weightᵀ + bias</c>,
    /// with the weight stored <c>[out, in]</c> row-major (as <c>nn.Linear.weight</c>). The attention
    /// module's Q/K/V/O projections.
    /// </summary>
    /// <param name="input">
    /// <c>[..., in]</c>: the leading dimensions are the rows. The last dimension needs stride 1, and the
    /// leading ones must collapse to one row stride (any contiguous or row-sliced view does; stride 0
    /// broadcasts one row). A rank-2 transposed view (stride 1 on the rows) is read in place too.
    /// </param>
    /// <param name="weight"><c>[out, in]</c> row-major, exactly out·in elements.</param>
    /// <param name="bias">Length out, or empty for none.</param>
    /// <param name="output"><c>[..., out]</c> with the same leading lengths as <paramref name="input"/>, stride 1 on the last dimension, rows not overlapping; must not share memory with the inputs.</param>
    /// <param name="maxDegreeOfParallelism">Worker threads at most; -1 = all processors.</param>
    /// <exception cref="ArgumentException">
    /// A tensor has rank 0, leading lengths that differ, a layout that is not one matrix with stride 1 along a
    /// dimension, or a dimension over <see cref="int.MaxValue"/>; <paramref name="weight"/> does not hold out·in
    /// elements; <paramref name="bias"/> is neither empty nor of length out. Nothing is written.
    /// </exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxDegreeOfParallelism"/> is 0 or less than -1.</exception>
    public static unsafe void Linear(ReadOnlyTensorSpan<float> input, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias,
        TensorSpan<float> output, int maxDegreeOfParallelism = -1)
    {
        var x = Matrix.Of(input.Lengths, input.Strides, nameof(input), allowTransposed: true, allowOverlap: true);
        var y = Matrix.Of(output.Lengths, output.Strides, nameof(output), allowTransposed: false, allowOverlap: false);
        if (input.Rank != output.Rank || !input.Lengths[..^1].SequenceEqual(output.Lengths[..^1]))
        {
            throw new ArgumentException(
                $"output has lengths [{Join(output.Lengths)}]; its leading lengths must equal input's [{Join(input.Lengths)}] (only the last dimension differs: out vs in).",
                nameof(output));
        }
        int rows = x.Rows, inFeatures = x.Cols, outFeatures = y.Cols;
        if (weight.Length != (long)outFeatures * inFeatures)
        {
            throw new ArgumentException(
                $"weight has {weight.Length} elements; a [out, in] = [{outFeatures}, {inFeatures}] weight needs {(long)outFeatures * inFeatures}.", nameof(weight));
        }
        if (!bias.IsEmpty && bias.Length != outFeatures)
        {
            throw new ArgumentException($"bias has {bias.Length} elements; it must be empty or hold out = {outFeatures}.", nameof(bias));
        }
        int parallelism = ResolveParallelism(maxDegreeOfParallelism);
        if (rows == 0 || outFeatures == 0) return;

        fixed (float* pIn = &Elements.First(input), pOut = &Elements.First(output), pw = weight, pbias = bias)
        {
            SgemmDriver.Run(new GemmProblem
            {
                TransA = x.Transposed, TransB = true, M = rows, N = outFeatures, K = inFeatures, Alpha = 1f, Beta = 0f,
                A = pIn, Lda = x.Ld, B = pw, Ldb = inFeatures, C = pOut, Ldc = y.Ld, Bias = bias.IsEmpty ? null : pbias,
                Parallelism = parallelism,
            });
        }
    }

    /// <summary>A tensor seen as a matrix <c>[Rows, Cols]</c>: element (i, j) at <c>i·Ld + j</c>, or <c>j·Ld + i</c> when <see cref="Transposed"/>.</summary>
    private readonly record struct Matrix(int Rows, int Cols, nint Ld, bool Transposed)
    {
        public static Matrix Of(ReadOnlySpan<nint> lengths, ReadOnlySpan<nint> strides, string paramName, bool allowTransposed, bool allowOverlap)
        {
            int rank = lengths.Length;
            if (rank == 0)
            {
                throw new ArgumentException($"{paramName} must have rank >= 1 ([..., features]), got rank 0.", paramName);
            }
            long rowCount = 1;
            for (int i = 0; i < rank - 1; i++) rowCount *= lengths[i];
            if (rowCount > int.MaxValue || lengths[^1] > int.MaxValue)
            {
                throw new ArgumentException(
                    $"{paramName} [{Join(lengths)}] is {rowCount} rows of {lengths[^1]}; both must be at most {int.MaxValue}.", paramName);
            }
            int rows = (int)rowCount, cols = (int)lengths[^1];

            // One row stride for all leading dimensions (length-1 dimensions have no stride to honour).
            nint rowStride = -1, expected = -1;
            for (int i = rank - 2; i >= 0; i--)
            {
                if (lengths[i] == 1) continue;
                if (rowStride < 0)
                {
                    rowStride = strides[i];
                }
                else if (strides[i] != expected)
                {
                    throw new ArgumentException(
                        $"{paramName} lengths [{Join(lengths)}] strides [{Join(strides)}]: dimension {i} has stride {strides[i]}, " +
                        $"but the leading dimensions must collapse to rows of one stride (expected {expected}).", paramName);
                }
                expected = strides[i] * lengths[i];
            }
            nint colStride = cols > 1 ? strides[^1] : 1;
            if (rows <= 1 || rowStride < 0)
            {
                rowStride = Math.Max(cols, 1);
            }
            if (colStride == 1)
            {
                if (!allowOverlap && rows > 1 && rowStride < cols)
                {
                    throw new ArgumentException(
                        $"{paramName} lengths [{Join(lengths)}] strides [{Join(strides)}]: rows {rowStride} apart overlap rows of {cols}.", paramName);
                }
                return new Matrix(rows, cols, rowStride, false);
            }
            if (allowTransposed && rank == 2 && (rows <= 1 || rowStride == 1) && colStride >= rows)
            {
                return new Matrix(rows, cols, colStride, true);
            }
            throw new ArgumentException(
                $"{paramName} lengths [{Join(lengths)}] strides [{Join(strides)}]: the last dimension must have stride 1" +
                (allowTransposed ? " (or, rank 2, the first)." : "."), paramName);
        }
    }

    private static int ResolveParallelism(int maxDegreeOfParallelism)
    {
        if (maxDegreeOfParallelism == 0 || maxDegreeOfParallelism < -1)
        {
            throw new ArgumentOutOfRangeException(nameof(maxDegreeOfParallelism), maxDegreeOfParallelism,
                $"{nameof(maxDegreeOfParallelism)} must be -1 (all processors) or >= 1, got {maxDegreeOfParallelism}.");
        }
        return maxDegreeOfParallelism < 0 ? Environment.ProcessorCount : maxDegreeOfParallelism;
    }

    private static void RequireNonNegative(int value, string paramName)
    {
        if (value < 0)
        {
            throw new ArgumentOutOfRangeException(paramName, value, $"{paramName} must be >= 0, got {value}.");
        }
    }

    private static void RequireLeadingDimension(int ld, string paramName, string matrix, int rows, int cols, string? flagName, bool flag)
    {
        int min = Math.Max(1, cols);
        if (ld < min)
        {
            string stored = flagName is null ? "" : $", {flagName} = {(flag ? "true" : "false")}";
            throw new ArgumentOutOfRangeException(paramName, ld,
                $"{paramName} = {ld} is less than {min}: the stored {matrix} is [{rows}, {cols}]{stored}, so {paramName} must be at least max(1, {cols}).");
        }
    }

    private static void RequireLength(int length, string paramName, string matrix, int rows, int cols, int ld, string ldName)
    {
        long need = rows == 0 || cols == 0 ? 0 : (long)(rows - 1) * ld + cols;
        if (length < need)
        {
            throw new ArgumentException(
                $"{paramName} has {length} elements; the stored {matrix} [{rows}, {cols}] with {ldName} = {ld} needs (rows - 1)·{ldName} + cols = {need}.",
                paramName);
        }
    }

    private static string Join(ReadOnlySpan<nint> values)
    {
        var parts = new string[values.Length];
        for (int i = 0; i < values.Length; i++) parts[i] = values[i].ToString(System.Globalization.CultureInfo.InvariantCulture);
        return string.Join(", ", parts);
    }
}
