// Few-row sgemm (decode-time projections): no B packing, one pass over B from memory.
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using FastAttention.Cpu.Engine;

namespace FastAttention.Cpu.Gemm;

/// <summary>
/// <c>C = alpha·op(A)·op(B) + beta·C + bias</c> for at most <see cref="MaxRows"/> rows of C (decode-time
/// projections). With so few rows the product is bound by reading B once from memory, and packing B (the
/// blocked path's first step) costs more than the arithmetic: at M = 1, N = K = 4096, 2 threads, measured
/// 1.3 ms (Bᵀ) and 1.7 ms (B) here against 5.7 ms through the packed path. So:
/// <list type="bullet">
/// <item>op(A)·alpha is copied to a contiguous <c>[m, k]</c> buffer (small, shared by the workers);</item>
/// <item>Bᵀ stored <c>[n, k]</c> (<c>X·Wᵀ</c>): each C column is the dot products of the A rows with one weight
/// row, every weight vector loaded once for all A rows;</item>
/// <item>B stored <c>[k, n]</c>: C rows take <c>a[i, q]·B[q, :]</c> one B row after another (two per step),
/// so B is read in address order; a tile-by-tile walk down k (the micro-kernel reading B in place) touches
/// a new page every row and measured 2x slower.</item>
/// </list>
/// </summary>
internal sealed unsafe class SgemmSmallM<TOps, TV> where TOps : struct, IVecOps<TV> where TV : struct
{
    /// <summary>
    /// Largest M this path takes. From M = 3 on the dot products re-read the A rows from L2 for every weight
    /// row and the packed path is as fast (measured at M = 3..5, N = K = 4096: 2.9-4.2 ms either way).
    /// </summary>
    public const int MaxRows = 2;

    /// <summary>Output columns per work item with Bᵀ: 64 weight rows.</summary>
    private const int RowsPerItem = 64;

    /// <summary>Output columns per work item with B <c>[k, n]</c>: 2 KB of each B row, read in address order.</summary>
    private const int ColumnsPerItem = 512;

    private readonly GemmProblem _p;
    private readonly float* _a;   // op(A)·alpha, [m, k] contiguous

    private SgemmSmallM(in GemmProblem p, float* a)
    {
        _p = p;
        _a = a;
    }

    public static void Run(in GemmProblem p, int parallelism)
    {
        var buffers = GemmBuffers.Current;
        buffers.EnsureA((long)p.M * p.K);
        float* a = buffers.APack;
        for (int i = 0; i < p.M; i++)
        {
            float* dst = a + (nint)i * p.K;
            if (p.TransA)
            {
                for (int q = 0; q < p.K; q++) dst[q] = p.A[q * p.Lda + i] * p.Alpha;
            }
            else
            {
                TensorPrimitives.Multiply(new ReadOnlySpan<float>(p.A + i * p.Lda, p.K), p.Alpha, new Span<float>(dst, p.K));
            }
        }
        var job = new SgemmSmallM<TOps, TV>(p, a);
        int n = p.N, width = p.TransB ? RowsPerItem : ColumnsPerItem, items = (n + width - 1) / width;
        int workers = Math.Min(parallelism, items);
        if (workers <= 1)
        {
            for (int item = 0; item < items; item++) job.Columns(item * width, Math.Min(n, (item + 1) * width));
            return;
        }
        Parallel.For(0, items, new ParallelOptions { MaxDegreeOfParallelism = workers },
            item => job.Columns(item * width, Math.Min(n, (item + 1) * width)));
    }

    /// <summary>Columns <c>[j0, j1)</c> of C (one work item), every row.</summary>
    private void Columns(int j0, int j1)
    {
        switch (_p.M)
        {
            case 1: Columns<Rows1>(j0, j1); break;
            default: Columns<Rows2>(j0, j1); break;
        }
    }

    // The row count is a type parameter so every loop body is straight-line code: with run-time
    // "if (m > 1)" inside the loops the JIT kept the accumulators on the stack (measured 3-5x slower).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Columns<TRows>(int j0, int j1) where TRows : struct, IRows
    {
        int m = TRows.Count, k = _p.K;
        nint ldc = _p.Ldc;
        float beta = _p.Beta;
        float* bias = _p.Bias;
        bool overwrite = beta == 0 && bias == null;
        if (_p.TransB)
        {
            float* dots = stackalloc float[MaxRows];
            for (int col = j0; col < j1; col++)
            {
                Dots<TRows>(_p.B + col * _p.Ldb, dots);
                for (int i = 0; i < m; i++)
                {
                    float* c = _p.C + i * ldc + col;
                    *c = overwrite ? dots[i] : dots[i] + SgemmDriver.Start(*c, beta, bias, col);
                }
            }
            return;
        }

        // C[:, j0..j1) starts as beta·C + bias (or 0), then takes two rows of B per pass: B is read in
        // address order, the C chunk (m x 512 floats at most) stays in L1.
        for (int i = 0; i < m; i++)
        {
            float* cr = _p.C + i * ldc;
            for (int x = j0; x < j1; x++) cr[x] = overwrite ? 0f : SgemmDriver.Start(cr[x], beta, bias, x);
        }
        int q = 0;
        for (; q + 2 <= k; q += 2)
        {
            AddTwoRows<TRows>(_p.B + q * _p.Ldb, _p.Ldb, q, j0, j1);
        }
        if (q < k)
        {
            AddRow<TRows>(_p.B + q * _p.Ldb, q, j0, j1);
        }
    }

    /// <summary><c>dots[i] = a[i, :]·w</c> for every row i of A, each weight vector loaded once for all rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Dots<TRows>(float* w, float* dots) where TRows : struct, IRows
    {
        int m = TRows.Count, k = _p.K, v = TOps.Count;
        float* a0 = _a, a1 = _a + k;
        TV s00 = TOps.Zero, s10 = TOps.Zero, s01 = TOps.Zero, s11 = TOps.Zero;
        int q = 0;
        for (; q + 2 * v <= k; q += 2 * v)
        {
            TV x0 = TOps.Load(w + q), x1 = TOps.Load(w + q + v);
            s00 = TOps.Fma(TOps.Load(a0 + q), x0, s00);
            s01 = TOps.Fma(TOps.Load(a0 + q + v), x1, s01);
            if (m > 1) { s10 = TOps.Fma(TOps.Load(a1 + q), x0, s10); s11 = TOps.Fma(TOps.Load(a1 + q + v), x1, s11); }
        }
        dots[0] = Sum(TOps.Add(s00, s01), a0, w, q, k);
        if (m > 1) dots[1] = Sum(TOps.Add(s10, s11), a1, w, q, k);
    }

    /// <summary>Lanes of <paramref name="acc"/> plus <c>a[q..end)·w[q..end)</c>.</summary>
    private static float Sum(TV acc, float* a, float* w, int q, int end)
    {
        float* lanes = stackalloc float[TOps.Count];
        TOps.Store(lanes, acc);
        float s = 0;
        for (int l = 0; l < TOps.Count; l++) s += lanes[l];
        for (; q < end; q++) s = MathF.FusedMultiplyAdd(a[q], w[q], s);
        return s;
    }

    /// <summary><c>C[i, j0..j1) += a[i, q]·B[q, j] + a[i, q + 1]·B[q + 1, j]</c> for every row i; row q + 1 of B is at <c>b + next</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void AddTwoRows<TRows>(float* b, nint next, int q, int j0, int j1) where TRows : struct, IRows
    {
        int m = TRows.Count, k = _p.K, w = TOps.Count;
        nint ldc = _p.Ldc;
        float* a = _a + q;
        TV x00 = TOps.Broadcast(a[0]), x01 = TOps.Broadcast(a[1]);
        TV x10 = m > 1 ? TOps.Broadcast(a[k]) : TOps.Zero, x11 = m > 1 ? TOps.Broadcast(a[k + 1]) : TOps.Zero;
        float* c = _p.C;
        int j = j0;
        for (; j + w <= j1; j += w)
        {
            TV b0 = TOps.Load(b + j), b1 = TOps.Load(b + next + j);
            TOps.Store(c + j, TOps.Fma(x01, b1, TOps.Fma(x00, b0, TOps.Load(c + j))));
            if (m > 1) TOps.Store(c + ldc + j, TOps.Fma(x11, b1, TOps.Fma(x10, b0, TOps.Load(c + ldc + j))));
        }
        for (; j < j1; j++)
        {
            for (int i = 0; i < m; i++)
            {
                float* ci = c + i * ldc + j;
                *ci = MathF.FusedMultiplyAdd(a[i * k + 1], b[next + j], MathF.FusedMultiplyAdd(a[i * k], b[j], *ci));
            }
        }
    }

    /// <summary><c>C[i, j0..j1) += a[i, q]·B[q, j]</c> for every row i (the last row of an odd k).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void AddRow<TRows>(float* b, int q, int j0, int j1) where TRows : struct, IRows
    {
        int m = TRows.Count, k = _p.K, w = TOps.Count;
        nint ldc = _p.Ldc;
        float* a = _a + q;
        TV x0 = TOps.Broadcast(a[0]);
        TV x1 = m > 1 ? TOps.Broadcast(a[k]) : TOps.Zero;
        float* c = _p.C;
        int j = j0;
        for (; j + w <= j1; j += w)
        {
            TV b0 = TOps.Load(b + j);
            TOps.Store(c + j, TOps.Fma(x0, b0, TOps.Load(c + j)));
            if (m > 1) TOps.Store(c + ldc + j, TOps.Fma(x1, b0, TOps.Load(c + ldc + j)));
        }
        for (; j < j1; j++)
        {
            for (int i = 0; i < m; i++) c[i * ldc + j] = MathF.FusedMultiplyAdd(a[i * k], b[j], c[i * ldc + j]);
        }
    }
}
