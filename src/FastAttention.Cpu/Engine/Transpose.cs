// 16x16 fp32 block transposes with AVX-512 shuffles, for packing query rows into the engine's transposed tiles
// and writing transposed output tiles back as rows (the scalar strided loops cost ~10% on short key ranges).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastAttention.Cpu.Engine;

/// <summary>Block transposes of 16 rows of 16 floats.</summary>
internal static unsafe class Transpose
{
    /// <summary>True where <see cref="Block16"/> runs (AVX-512F, 512-bit vectors accelerated).</summary>
    public static bool Supported => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>
    /// <c>dst[j][i] = src[i][j] · scale[j]</c> for i, j in [0, 16): 16 source rows of 16 floats become 16
    /// destination rows. <paramref name="src"/> and <paramref name="dst"/> hold 16 row pointers each;
    /// <paramref name="scale"/> holds 16 factors, one per destination row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Block16(float** src, float** dst, float* scale)
    {
        // Stage 1: interleave 32-bit elements of row pairs within each 128-bit lane.
        Vector512<float> t0 = Avx512F.UnpackLow(Vector512.Load(src[0]), Vector512.Load(src[1]));
        Vector512<float> t1 = Avx512F.UnpackHigh(Vector512.Load(src[0]), Vector512.Load(src[1]));
        Vector512<float> t2 = Avx512F.UnpackLow(Vector512.Load(src[2]), Vector512.Load(src[3]));
        Vector512<float> t3 = Avx512F.UnpackHigh(Vector512.Load(src[2]), Vector512.Load(src[3]));
        Vector512<float> t4 = Avx512F.UnpackLow(Vector512.Load(src[4]), Vector512.Load(src[5]));
        Vector512<float> t5 = Avx512F.UnpackHigh(Vector512.Load(src[4]), Vector512.Load(src[5]));
        Vector512<float> t6 = Avx512F.UnpackLow(Vector512.Load(src[6]), Vector512.Load(src[7]));
        Vector512<float> t7 = Avx512F.UnpackHigh(Vector512.Load(src[6]), Vector512.Load(src[7]));
        Vector512<float> t8 = Avx512F.UnpackLow(Vector512.Load(src[8]), Vector512.Load(src[9]));
        Vector512<float> t9 = Avx512F.UnpackHigh(Vector512.Load(src[8]), Vector512.Load(src[9]));
        Vector512<float> t10 = Avx512F.UnpackLow(Vector512.Load(src[10]), Vector512.Load(src[11]));
        Vector512<float> t11 = Avx512F.UnpackHigh(Vector512.Load(src[10]), Vector512.Load(src[11]));
        Vector512<float> t12 = Avx512F.UnpackLow(Vector512.Load(src[12]), Vector512.Load(src[13]));
        Vector512<float> t13 = Avx512F.UnpackHigh(Vector512.Load(src[12]), Vector512.Load(src[13]));
        Vector512<float> t14 = Avx512F.UnpackLow(Vector512.Load(src[14]), Vector512.Load(src[15]));
        Vector512<float> t15 = Avx512F.UnpackHigh(Vector512.Load(src[14]), Vector512.Load(src[15]));

        // Stage 2: interleave 64-bit pairs: each 128-bit lane now holds one column of 4 consecutive rows.
        Vector512<float> u0 = Lo64(t0, t2), u1 = Hi64(t0, t2), u2 = Lo64(t1, t3), u3 = Hi64(t1, t3);
        Vector512<float> u4 = Lo64(t4, t6), u5 = Hi64(t4, t6), u6 = Lo64(t5, t7), u7 = Hi64(t5, t7);
        Vector512<float> u8 = Lo64(t8, t10), u9 = Hi64(t8, t10), u10 = Lo64(t9, t11), u11 = Hi64(t9, t11);
        Vector512<float> u12 = Lo64(t12, t14), u13 = Hi64(t12, t14), u14 = Lo64(t13, t15), u15 = Hi64(t13, t15);

        // Stages 3 and 4: gather the 128-bit lanes of rows 0-3, 4-7, 8-11, 12-15 into whole columns.
        Vector512<float> v0 = Avx512F.Shuffle4x128(u0, u4, 0x88), v1 = Avx512F.Shuffle4x128(u1, u5, 0x88);
        Vector512<float> v2 = Avx512F.Shuffle4x128(u2, u6, 0x88), v3 = Avx512F.Shuffle4x128(u3, u7, 0x88);
        Vector512<float> v4 = Avx512F.Shuffle4x128(u0, u4, 0xDD), v5 = Avx512F.Shuffle4x128(u1, u5, 0xDD);
        Vector512<float> v6 = Avx512F.Shuffle4x128(u2, u6, 0xDD), v7 = Avx512F.Shuffle4x128(u3, u7, 0xDD);
        Vector512<float> v8 = Avx512F.Shuffle4x128(u8, u12, 0x88), v9 = Avx512F.Shuffle4x128(u9, u13, 0x88);
        Vector512<float> v10 = Avx512F.Shuffle4x128(u10, u14, 0x88), v11 = Avx512F.Shuffle4x128(u11, u15, 0x88);
        Vector512<float> v12 = Avx512F.Shuffle4x128(u8, u12, 0xDD), v13 = Avx512F.Shuffle4x128(u9, u13, 0xDD);
        Vector512<float> v14 = Avx512F.Shuffle4x128(u10, u14, 0xDD), v15 = Avx512F.Shuffle4x128(u11, u15, 0xDD);

        Store(Avx512F.Shuffle4x128(v0, v8, 0x88), dst, scale, 0);
        Store(Avx512F.Shuffle4x128(v1, v9, 0x88), dst, scale, 1);
        Store(Avx512F.Shuffle4x128(v2, v10, 0x88), dst, scale, 2);
        Store(Avx512F.Shuffle4x128(v3, v11, 0x88), dst, scale, 3);
        Store(Avx512F.Shuffle4x128(v4, v12, 0x88), dst, scale, 4);
        Store(Avx512F.Shuffle4x128(v5, v13, 0x88), dst, scale, 5);
        Store(Avx512F.Shuffle4x128(v6, v14, 0x88), dst, scale, 6);
        Store(Avx512F.Shuffle4x128(v7, v15, 0x88), dst, scale, 7);
        Store(Avx512F.Shuffle4x128(v0, v8, 0xDD), dst, scale, 8);
        Store(Avx512F.Shuffle4x128(v1, v9, 0xDD), dst, scale, 9);
        Store(Avx512F.Shuffle4x128(v2, v10, 0xDD), dst, scale, 10);
        Store(Avx512F.Shuffle4x128(v3, v11, 0xDD), dst, scale, 11);
        Store(Avx512F.Shuffle4x128(v4, v12, 0xDD), dst, scale, 12);
        Store(Avx512F.Shuffle4x128(v5, v13, 0xDD), dst, scale, 13);
        Store(Avx512F.Shuffle4x128(v6, v14, 0xDD), dst, scale, 14);
        Store(Avx512F.Shuffle4x128(v7, v15, 0xDD), dst, scale, 15);
    }

    /// <summary>
    /// The 16 horizontal sums of 16 vectors as one vector (element r = sum of a_r's 16 elements), by a
    /// transpose-and-add tree: pairs of rows, then quads within 128-bit lanes, then across lanes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> SumEach16(
        Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3,
        Vector512<float> a4, Vector512<float> a5, Vector512<float> a6, Vector512<float> a7,
        Vector512<float> a8, Vector512<float> a9, Vector512<float> a10, Vector512<float> a11,
        Vector512<float> a12, Vector512<float> a13, Vector512<float> a14, Vector512<float> a15)
    {
        // Per 128-bit lane: [r0 02, r1 02, r0 13, r1 13] partial sums of a row pair.
        Vector512<float> b0 = Avx512F.UnpackLow(a0, a1) + Avx512F.UnpackHigh(a0, a1);
        Vector512<float> b1 = Avx512F.UnpackLow(a2, a3) + Avx512F.UnpackHigh(a2, a3);
        Vector512<float> b2 = Avx512F.UnpackLow(a4, a5) + Avx512F.UnpackHigh(a4, a5);
        Vector512<float> b3 = Avx512F.UnpackLow(a6, a7) + Avx512F.UnpackHigh(a6, a7);
        Vector512<float> b4 = Avx512F.UnpackLow(a8, a9) + Avx512F.UnpackHigh(a8, a9);
        Vector512<float> b5 = Avx512F.UnpackLow(a10, a11) + Avx512F.UnpackHigh(a10, a11);
        Vector512<float> b6 = Avx512F.UnpackLow(a12, a13) + Avx512F.UnpackHigh(a12, a13);
        Vector512<float> b7 = Avx512F.UnpackLow(a14, a15) + Avx512F.UnpackHigh(a14, a15);
        // Per 128-bit lane: the lane's sum for 4 consecutive rows.
        Vector512<float> c0 = Lo64(b0, b1) + Hi64(b0, b1), c1 = Lo64(b2, b3) + Hi64(b2, b3);
        Vector512<float> c2 = Lo64(b4, b5) + Hi64(b4, b5), c3 = Lo64(b6, b7) + Hi64(b6, b7);
        // Across lanes: [c0 l0+l1, c0 l2+l3, c1 l0+l1, c1 l2+l3], then the final pairs.
        Vector512<float> d0 = Avx512F.Shuffle4x128(c0, c1, 0x88) + Avx512F.Shuffle4x128(c0, c1, 0xDD);
        Vector512<float> d1 = Avx512F.Shuffle4x128(c2, c3, 0x88) + Avx512F.Shuffle4x128(c2, c3, 0xDD);
        return Avx512F.Shuffle4x128(d0, d1, 0x88) + Avx512F.Shuffle4x128(d0, d1, 0xDD);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Lo64(Vector512<float> a, Vector512<float> b) =>
        Avx512F.UnpackLow(a.AsDouble(), b.AsDouble()).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Hi64(Vector512<float> a, Vector512<float> b) =>
        Avx512F.UnpackHigh(a.AsDouble(), b.AsDouble()).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector512<float> row, float** dst, float* scale, int j) =>
        (row * Vector512.Create(scale[j])).Store(dst[j]);
}
