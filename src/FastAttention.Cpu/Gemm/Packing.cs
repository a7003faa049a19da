// Packing of GEMM operands into the panel layouts the micro-kernel streams (A strips, B panels).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FastAttention.Cpu.Engine;

namespace FastAttention.Cpu.Gemm;

/// <summary>
/// Copies blocks of op(A) and op(B) into contiguous panels:
/// <list type="bullet">
/// <item>an A strip is <see cref="GemmBlocking.MR"/> rows of op(A) over kc columns, column-interleaved
/// (<c>strip[p * MR + r]</c>), times alpha, so the micro-kernel broadcasts MR consecutive floats per k step
/// (row stride 1, column stride MR);</item>
/// <item>a B panel is kc rows of op(B) over NR = 2W columns, row-major (<c>panel[p * NR + j]</c>), zero-padded
/// past the last column, so the micro-kernel loads two aligned-in-panel vectors per k step.</item>
/// </list>
/// The transposing cases (row-major A, and Bᵀ as in <c>X·Wᵀ</c>) go through 8 x 8 in-register transposes
/// on AVX; a scalar loop covers the tails and processors without AVX.
/// </summary>
internal static unsafe class Packing
{
    /// <summary>
    /// Packs rows <c>[0, rows)</c> (rows &lt;= MR) and columns <c>[0, kc)</c> of op(A) starting at
    /// <paramref name="a"/> into one strip; rows past <paramref name="rows"/> are zero.
    /// The strip needs <c>kc * MR + StripSlack</c> floats (the transposing path stores 8 lanes per k step).
    /// </summary>
    /// <param name="a">op(A)[i0, p0].</param>
    /// <param name="lda">Leading dimension of the stored A.</param>
    /// <param name="transposed">A is stored <c>[K, M]</c> (op(A)[i, p] at <c>a[p * lda + i]</c>); else <c>[M, K]</c>.</param>
    /// <param name="rows">Rows of op(A) to pack (1..MR).</param>
    /// <param name="kc">Columns of op(A) to pack.</param>
    /// <param name="alpha">Multiplier folded into the packed values.</param>
    /// <param name="dst">The strip, <c>[kc, MR]</c>.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackAStrip(float* a, nint lda, bool transposed, int rows, int kc, float alpha, float* dst)
    {
        const int mr = GemmBlocking.MR;
        if (transposed)
        {
            // op(A) rows are contiguous in memory along i: MR floats per k step.
            if (rows == mr)
            {
                for (int p = 0; p < kc; p++)
                {
                    float* s = a + p * lda;
                    float* d = dst + p * mr;
                    d[0] = s[0] * alpha; d[1] = s[1] * alpha; d[2] = s[2] * alpha;
                    d[3] = s[3] * alpha; d[4] = s[4] * alpha; d[5] = s[5] * alpha;
                }
                return;
            }
            for (int p = 0; p < kc; p++)
            {
                float* s = a + p * lda;
                float* d = dst + p * mr;
                for (int r = 0; r < mr; r++) d[r] = r < rows ? s[r] * alpha : 0f;
            }
            return;
        }

        int p0 = 0;
        if (Avx.IsSupported && rows == mr)
        {
            // Rows 6 and 7 of the 8 x 8 transpose repeat row 5; their lanes land on the next k step's
            // first two slots and are overwritten by it (the last ones fall into the strip's slack).
            float* r0 = a, r1 = a + lda, r2 = a + 2 * lda, r3 = a + 3 * lda, r4 = a + 4 * lda, r5 = a + 5 * lda;
            var scale = Vector256.Create(alpha);
            for (; p0 + 8 <= kc; p0 += 8)
            {
                Transpose8x8(r0 + p0, r1 + p0, r2 + p0, r3 + p0, r4 + p0, r5 + p0, r5 + p0, r5 + p0, scale, dst + p0 * mr, mr);
            }
        }
        for (int p = p0; p < kc; p++)
        {
            float* d = dst + p * mr;
            for (int r = 0; r < mr; r++) d[r] = r < rows ? a[r * lda + p] * alpha : 0f;
        }
    }

    /// <summary>Floats a strip needs past <c>kc * MR</c>.</summary>
    public const int StripSlack = 8;

    /// <summary>
    /// Packs rows <c>[0, kc)</c> and columns <c>[0, cols)</c> of op(B) starting at <paramref name="b"/> into
    /// <c>ceil(cols / nr)</c> panels of <c>[kc, nr]</c>, <paramref name="panelStride"/> floats apart; columns past
    /// <paramref name="cols"/> are zero. Memory is read in address order as far as the layout allows: whole
    /// B rows across all panels (plain), or 8 rows of Bᵀ at a time along k (transposed), which the hardware
    /// prefetcher follows (panel by panel, one short segment per row, measured 1.3-1.5x slower).
    /// </summary>
    /// <param name="b">op(B)[p0, j0].</param>
    /// <param name="ldb">Leading dimension of the stored B.</param>
    /// <param name="transposed">B is stored <c>[N, K]</c> (op(B)[p, j] at <c>b[j * ldb + p]</c>); else <c>[K, N]</c>.</param>
    /// <param name="kc">Rows of op(B) to pack.</param>
    /// <param name="cols">Columns of op(B) to pack.</param>
    /// <param name="dst">The first panel.</param>
    /// <param name="panelStride">Floats from one panel to the next (at least kc·nr).</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void PackB<TOps, TV>(float* b, nint ldb, bool transposed, int kc, int cols, float* dst, nint panelStride)
        where TOps : struct, IVecOps<TV> where TV : struct
    {
        int w = TOps.Count, nr = 2 * w;
        int full = cols / nr, rest = cols - full * nr;
        float* tail = dst + full * panelStride;
        if (!transposed)
        {
            for (int p = 0; p < kc; p++)
            {
                float* s = b + p * ldb;
                float* d = dst + p * nr;
                for (int q = 0; q < full; q++, s += nr, d += panelStride)
                {
                    TOps.Store(d, TOps.Load(s));
                    TOps.Store(d + w, TOps.Load(s + w));
                }
                if (rest > 0)
                {
                    float* t = tail + p * nr;
                    for (int j = 0; j < nr; j++) t[j] = j < rest ? s[j] : 0f;
                }
            }
            return;
        }

        int pFast = Avx.IsSupported ? kc & ~7 : 0;
        for (int j = 0; j < full * nr; j += 8)
        {
            float* s = b + j * ldb;
            float* d = dst + (j / nr) * panelStride + j % nr;
            for (int p0 = 0; p0 < pFast; p0 += 8)
            {
                float* r = s + p0;
                Transpose8x8(r, r + ldb, r + 2 * ldb, r + 3 * ldb, r + 4 * ldb, r + 5 * ldb, r + 6 * ldb, r + 7 * ldb,
                    Vector256.Create(1f), d + p0 * nr, nr);
            }
            for (int p = pFast; p < kc; p++)
            {
                for (int x = 0; x < 8; x++) d[p * nr + x] = s[x * ldb + p];
            }
        }
        if (rest > 0)
        {
            float* s = b + full * nr * ldb;
            for (int p = 0; p < kc; p++)
            {
                float* t = tail + p * nr;
                for (int j = 0; j < nr; j++) t[j] = j < rest ? s[j * ldb + p] : 0f;
            }
        }
    }

    /// <summary>
    /// Loads 8 floats from each of 8 rows, multiplies by <paramref name="scale"/> and stores column q
    /// (<c>[s0[q], ..., s7[q]]</c>) at <c>dst + q * dstStride</c>, q = 0..7, in increasing q.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(float* s0, float* s1, float* s2, float* s3, float* s4, float* s5, float* s6, float* s7,
        Vector256<float> scale, float* dst, nint dstStride)
    {
        Vector256<float> t0 = Avx.UnpackLow(Avx.LoadVector256(s0), Avx.LoadVector256(s1));   // a0 b0 a1 b1 | a4 b4 a5 b5
        Vector256<float> t1 = Avx.UnpackHigh(Avx.LoadVector256(s0), Avx.LoadVector256(s1));  // a2 b2 a3 b3 | a6 b6 a7 b7
        Vector256<float> t2 = Avx.UnpackLow(Avx.LoadVector256(s2), Avx.LoadVector256(s3));
        Vector256<float> t3 = Avx.UnpackHigh(Avx.LoadVector256(s2), Avx.LoadVector256(s3));
        Vector256<float> t4 = Avx.UnpackLow(Avx.LoadVector256(s4), Avx.LoadVector256(s5));
        Vector256<float> t5 = Avx.UnpackHigh(Avx.LoadVector256(s4), Avx.LoadVector256(s5));
        Vector256<float> t6 = Avx.UnpackLow(Avx.LoadVector256(s6), Avx.LoadVector256(s7));
        Vector256<float> t7 = Avx.UnpackHigh(Avx.LoadVector256(s6), Avx.LoadVector256(s7));
        Vector256<float> u0 = Avx.Shuffle(t0, t2, 0x44);   // a0 b0 c0 d0 | a4 b4 c4 d4
        Vector256<float> u1 = Avx.Shuffle(t0, t2, 0xEE);   // a1 b1 c1 d1 | a5 b5 c5 d5
        Vector256<float> u2 = Avx.Shuffle(t1, t3, 0x44);   // a2 .. d2    | a6 .. d6
        Vector256<float> u3 = Avx.Shuffle(t1, t3, 0xEE);   // a3 .. d3    | a7 .. d7
        Vector256<float> u4 = Avx.Shuffle(t4, t6, 0x44);   // e0 .. h0    | e4 .. h4
        Vector256<float> u5 = Avx.Shuffle(t4, t6, 0xEE);
        Vector256<float> u6 = Avx.Shuffle(t5, t7, 0x44);
        Vector256<float> u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(dst, Avx.Permute2x128(u0, u4, 0x20) * scale);
        Avx.Store(dst + dstStride, Avx.Permute2x128(u1, u5, 0x20) * scale);
        Avx.Store(dst + 2 * dstStride, Avx.Permute2x128(u2, u6, 0x20) * scale);
        Avx.Store(dst + 3 * dstStride, Avx.Permute2x128(u3, u7, 0x20) * scale);
        Avx.Store(dst + 4 * dstStride, Avx.Permute2x128(u0, u4, 0x31) * scale);
        Avx.Store(dst + 5 * dstStride, Avx.Permute2x128(u1, u5, 0x31) * scale);
        Avx.Store(dst + 6 * dstStride, Avx.Permute2x128(u2, u6, 0x31) * scale);
        Avx.Store(dst + 7 * dstStride, Avx.Permute2x128(u3, u7, 0x31) * scale);
    }
}
