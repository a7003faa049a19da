// Vector-width abstraction so one kernel source serves AVX-512, AVX2 and 128-bit SIMD.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttention.Cpu.Engine;

/// <summary>Picks the vector width of a call.</summary>
internal static class Widths
{
    /// <summary><see cref="VectorWidth.Auto"/> becomes the widest width the processor accelerates.</summary>
    public static VectorWidth Resolve(VectorWidth requested) => requested switch
    {
        VectorWidth.Auto when Vector512.IsHardwareAccelerated => VectorWidth.V512,
        VectorWidth.Auto when Vector256.IsHardwareAccelerated => VectorWidth.V256,
        VectorWidth.Auto => VectorWidth.V128,
        _ => requested,
    };
}

/// <summary>
/// Float vector operations of one width. Implemented by empty structs so generic code specialised on
/// them is compiled once per width with every call inlined (no virtual dispatch).
/// </summary>
internal unsafe interface IVecOps<TV> where TV : struct
{
    static abstract int Count { get; }
    static abstract TV Zero { get; }
    static abstract TV Broadcast(float x);
    static abstract TV Load(float* p);
    static abstract void Store(float* p, TV v);
    static abstract TV Fma(TV a, TV b, TV c);
    static abstract TV Add(TV a, TV b);
    static abstract TV Sub(TV a, TV b);
    static abstract TV Mul(TV a, TV b);
    static abstract TV Max(TV a, TV b);
    /// <summary>2^x for x in [-127, 127] (rel. error ~2e-7); exactly 0 for x &lt;= -127 (so -inf gives 0).</summary>
    static abstract TV Exp2(TV x);
    /// <summary>Lane-wise <c>lo &lt;= x &amp;&amp; x &lt;= hi ? v : -inf</c>.</summary>
    static abstract TV KeepInRange(TV v, TV x, TV lo, TV hi);
    /// <summary>Lane-wise <c>x == -inf ? 0 : x</c>.</summary>
    static abstract TV NegInfToZero(TV x);
    /// <summary>Lane-wise <c>candidate &gt; old + slack ? candidate : old</c>.</summary>
    static abstract TV RaiseAbove(TV old, TV candidate, TV slack);
    static abstract bool AllEqual(TV a, TV b);
    static abstract float Sum(TV a);
}

internal unsafe struct V512 : IVecOps<Vector512<float>>
{
    public static int Count => Vector512<float>.Count;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Broadcast(float x) => Vector512.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load(float* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector512<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Fma(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Vector512.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Sub(Vector512<float> a, Vector512<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Mul(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Max(Vector512<float> a, Vector512<float> b) => Vector512.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp2(Vector512<float> x)
    {
        x = Vector512.Min(Vector512.Max(x, Vector512.Create(-127f)), Vector512.Create(127f));
        Vector512<float> n = Vector512.Round(x);
        Vector512<float> f = x - n;
        Vector512<float> p = Vector512.Create(1.535336188319500e-4f);
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(1.339887440266574e-3f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(9.618437357674640e-3f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(5.550332471162809e-2f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(2.402264791363012e-1f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(6.931472028550421e-1f));
        p = Vector512.FusedMultiplyAdd(p, f, Vector512.Create(1f));
        Vector512<int> bits = Vector512.ShiftLeft(Vector512.ConvertToInt32(n) + Vector512.Create(127), 23);
        return p * bits.AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> KeepInRange(Vector512<float> v, Vector512<float> x, Vector512<float> lo, Vector512<float> hi) =>
        Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(x, lo) & Vector512.LessThanOrEqual(x, hi), v, Vector512.Create(float.NegativeInfinity));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> NegInfToZero(Vector512<float> x) =>
        Vector512.ConditionalSelect(Vector512.Equals(x, Vector512.Create(float.NegativeInfinity)), Vector512<float>.Zero, x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> RaiseAbove(Vector512<float> old, Vector512<float> candidate, Vector512<float> slack) =>
        Vector512.ConditionalSelect(Vector512.GreaterThan(candidate, old + slack), candidate, old);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool AllEqual(Vector512<float> a, Vector512<float> b) => Vector512.EqualsAll(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector512<float> a) => Vector512.Sum(a);
}

internal unsafe struct V256 : IVecOps<Vector256<float>>
{
    public static int Count => Vector256<float>.Count;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Broadcast(float x) => Vector256.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load(float* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector256<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Fma(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Vector256.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Sub(Vector256<float> a, Vector256<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Mul(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Max(Vector256<float> a, Vector256<float> b) => Vector256.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp2(Vector256<float> x)
    {
        x = Vector256.Min(Vector256.Max(x, Vector256.Create(-127f)), Vector256.Create(127f));
        Vector256<float> n = Vector256.Round(x);
        Vector256<float> f = x - n;
        Vector256<float> p = Vector256.Create(1.535336188319500e-4f);
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(1.339887440266574e-3f));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(9.618437357674640e-3f));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(5.550332471162809e-2f));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(2.402264791363012e-1f));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(6.931472028550421e-1f));
        p = Vector256.FusedMultiplyAdd(p, f, Vector256.Create(1f));
        Vector256<int> bits = Vector256.ShiftLeft(Vector256.ConvertToInt32(n) + Vector256.Create(127), 23);
        return p * bits.AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> KeepInRange(Vector256<float> v, Vector256<float> x, Vector256<float> lo, Vector256<float> hi) =>
        Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(x, lo) & Vector256.LessThanOrEqual(x, hi), v, Vector256.Create(float.NegativeInfinity));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> NegInfToZero(Vector256<float> x) =>
        Vector256.ConditionalSelect(Vector256.Equals(x, Vector256.Create(float.NegativeInfinity)), Vector256<float>.Zero, x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> RaiseAbove(Vector256<float> old, Vector256<float> candidate, Vector256<float> slack) =>
        Vector256.ConditionalSelect(Vector256.GreaterThan(candidate, old + slack), candidate, old);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool AllEqual(Vector256<float> a, Vector256<float> b) => Vector256.EqualsAll(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector256<float> a) => Vector256.Sum(a);
}

internal unsafe struct V128 : IVecOps<Vector128<float>>
{
    public static int Count => Vector128<float>.Count;
    public static Vector128<float> Zero => Vector128<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Broadcast(float x) => Vector128.Create(x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Load(float* p) => Vector128.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector128<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Fma(Vector128<float> a, Vector128<float> b, Vector128<float> c) => Vector128.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Add(Vector128<float> a, Vector128<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Sub(Vector128<float> a, Vector128<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Mul(Vector128<float> a, Vector128<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector128<float> Max(Vector128<float> a, Vector128<float> b) => Vector128.Max(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Exp2(Vector128<float> x)
    {
        x = Vector128.Min(Vector128.Max(x, Vector128.Create(-127f)), Vector128.Create(127f));
        Vector128<float> n = Vector128.Round(x);
        Vector128<float> f = x - n;
        Vector128<float> p = Vector128.Create(1.535336188319500e-4f);
        p = Vector128.FusedMultiplyAdd(p, f, Vector128.Create(1.339887440266574e-3f));
        p = Vector128.FusedMultiplyAdd(p, f, Vector128.Create(9.618437357674640e-3f));
        p = Vector128.FusedMultiplyAdd(p, f, Vector128.Create(5.550332471162809e-2f));
        p = Vector128.FusedMultiplyAdd(p, f, Vector128.Create(2.402264791363012e-1f));
        p = Vector128.FusedMultiplyAdd(p, f, Vector128.Create(6.931472028550421e-1f));
        p = Vector128.FusedMultiplyAdd(p, f, Vector128.Create(1f));
        Vector128<int> bits = Vector128.ShiftLeft(Vector128.ConvertToInt32(n) + Vector128.Create(127), 23);
        return p * bits.AsSingle();
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> KeepInRange(Vector128<float> v, Vector128<float> x, Vector128<float> lo, Vector128<float> hi) =>
        Vector128.ConditionalSelect(Vector128.GreaterThanOrEqual(x, lo) & Vector128.LessThanOrEqual(x, hi), v, Vector128.Create(float.NegativeInfinity));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> NegInfToZero(Vector128<float> x) =>
        Vector128.ConditionalSelect(Vector128.Equals(x, Vector128.Create(float.NegativeInfinity)), Vector128<float>.Zero, x);
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> RaiseAbove(Vector128<float> old, Vector128<float> candidate, Vector128<float> slack) =>
        Vector128.ConditionalSelect(Vector128.GreaterThan(candidate, old + slack), candidate, old);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool AllEqual(Vector128<float> a, Vector128<float> b) => Vector128.EqualsAll(a, b);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Vector128<float> a) => Vector128.Sum(a);
}
