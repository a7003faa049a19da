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
