// Register-blocked FMA micro-kernel: C[R x 2W] (+)= A[R x k] · B[k x 2W], R <= 6, W = vector width.
using System.Runtime.CompilerServices;

namespace FastAttention.Cpu.Engine;

/// <summary>Compile-time row count of a micro-kernel instance (1..6).</summary>
internal interface IRows { static abstract int Count { get; } }
internal struct Rows1 : IRows { public static int Count => 1; }
internal struct Rows2 : IRows { public static int Count => 2; }
internal struct Rows3 : IRows { public static int Count => 3; }
internal struct Rows4 : IRows { public static int Count => 4; }
internal struct Rows5 : IRows { public static int Count => 5; }
internal struct Rows6 : IRows { public static int Count => 6; }

/// <summary>
/// The one GEMM core of the CPU engine. A is addressed with a row stride and a column stride, so the
/// same kernel computes <c>Sᵀ = K·Qᵀ</c> (A = K rows, column stride 1) and <c>Oᵀ += Vᵀ·Pᵀ</c>
/// (A = V read transposed: row stride 1, column stride = V's row stride) without packing K or V.
/// B and C are row-major panels exactly two vectors wide (the query-column tile).
/// </summary>
internal static unsafe class MicroKernel<TOps, TV> where TOps : struct, IVecOps<TV> where TV : struct
{
    /// <summary>Number of rows one full kernel call covers.</summary>
    public const int MaxRows = 6;

    /// <summary>C[rows x 2W] (+)= A[rows x k] · B[k x 2W] for any row count, 6 rows at a time.</summary>
    /// <param name="rows">Rows of A and C.</param>
    /// <param name="a">A[0,0]; element (r, p) at <c>a[r * aRowStride + p * aColStride]</c>.</param>
    /// <param name="aRowStride">Element distance between rows of A.</param>
    /// <param name="aColStride">Element distance between columns of A.</param>
    /// <param name="b">B, <c>[k, 2W]</c> with row stride <paramref name="ldb"/>.</param>
    /// <param name="ldb">Row stride of B.</param>
    /// <param name="c">C, <c>[rows, 2W]</c> with row stride <paramref name="ldc"/>.</param>
    /// <param name="ldc">Row stride of C.</param>
    /// <param name="k">Reduction length.</param>
    /// <param name="accumulate">Add to C (true) or overwrite it (false).</param>
    public static void Gemm(int rows, float* a, nint aRowStride, nint aColStride, float* b, nint ldb, float* c, nint ldc, int k, bool accumulate)
    {
        int r = 0;
        for (; r + 6 <= rows; r += 6)
        {
            Block<Rows6>(a + r * aRowStride, aRowStride, aColStride, b, ldb, c + r * ldc, ldc, k, accumulate);
        }
        float* ar = a + r * aRowStride;
        float* cr = c + r * ldc;
        switch (rows - r)
        {
            case 1: Block<Rows1>(ar, aRowStride, aColStride, b, ldb, cr, ldc, k, accumulate); break;
            case 2: Block<Rows2>(ar, aRowStride, aColStride, b, ldb, cr, ldc, k, accumulate); break;
            case 3: Block<Rows3>(ar, aRowStride, aColStride, b, ldb, cr, ldc, k, accumulate); break;
            case 4: Block<Rows4>(ar, aRowStride, aColStride, b, ldb, cr, ldc, k, accumulate); break;
            case 5: Block<Rows5>(ar, aRowStride, aColStride, b, ldb, cr, ldc, k, accumulate); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Block<TRows>(float* a, nint rs, nint cs, float* b, nint ldb, float* c, nint ldc, int k, bool accumulate)
        where TRows : struct, IRows
    {
        int w = TOps.Count;
        TV c00 = TOps.Zero, c01 = TOps.Zero, c10 = TOps.Zero, c11 = TOps.Zero, c20 = TOps.Zero, c21 = TOps.Zero;
        TV c30 = TOps.Zero, c31 = TOps.Zero, c40 = TOps.Zero, c41 = TOps.Zero, c50 = TOps.Zero, c51 = TOps.Zero;
        nint rs2 = 2 * rs, rs3 = 3 * rs, rs4 = 4 * rs, rs5 = 5 * rs;
        for (int p = 0; p < k; p++)
        {
            TV b0 = TOps.Load(b);
            TV b1 = TOps.Load(b + w);
            b += ldb;
            TV x = TOps.Broadcast(a[0]);
            c00 = TOps.Fma(x, b0, c00); c01 = TOps.Fma(x, b1, c01);
            if (TRows.Count > 1) { x = TOps.Broadcast(a[rs]); c10 = TOps.Fma(x, b0, c10); c11 = TOps.Fma(x, b1, c11); }
            if (TRows.Count > 2) { x = TOps.Broadcast(a[rs2]); c20 = TOps.Fma(x, b0, c20); c21 = TOps.Fma(x, b1, c21); }
            if (TRows.Count > 3) { x = TOps.Broadcast(a[rs3]); c30 = TOps.Fma(x, b0, c30); c31 = TOps.Fma(x, b1, c31); }
            if (TRows.Count > 4) { x = TOps.Broadcast(a[rs4]); c40 = TOps.Fma(x, b0, c40); c41 = TOps.Fma(x, b1, c41); }
            if (TRows.Count > 5) { x = TOps.Broadcast(a[rs5]); c50 = TOps.Fma(x, b0, c50); c51 = TOps.Fma(x, b1, c51); }
            a += cs;
        }
        Put(c, w, c00, c01, accumulate);
        if (TRows.Count > 1) Put(c + ldc, w, c10, c11, accumulate);
        if (TRows.Count > 2) Put(c + 2 * ldc, w, c20, c21, accumulate);
        if (TRows.Count > 3) Put(c + 3 * ldc, w, c30, c31, accumulate);
        if (TRows.Count > 4) Put(c + 4 * ldc, w, c40, c41, accumulate);
        if (TRows.Count > 5) Put(c + 5 * ldc, w, c50, c51, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(float* c, int w, TV v0, TV v1, bool accumulate)
    {
        if (accumulate)
        {
            v0 = TOps.Add(v0, TOps.Load(c));
            v1 = TOps.Add(v1, TOps.Load(c + w));
        }
        TOps.Store(c, v0);
        TOps.Store(c + w, v1);
    }
}
