// Element conversions between float and the three attention element types, without boxing.
using System.Runtime.CompilerServices;

namespace FastAttention.Tests.Reference;

/// <summary>float / Half / BFloat16 conversions used by the references and the tests.</summary>
internal static class Num
{
    public static float ToFloat<T>(T x)
    {
        if (typeof(T) == typeof(float)) return Unsafe.As<T, float>(ref x);
        if (typeof(T) == typeof(Half)) return (float)Unsafe.As<T, Half>(ref x);
        if (typeof(T) == typeof(BFloat16)) return Unsafe.As<T, BFloat16>(ref x);
        throw new NotSupportedException($"Element type {typeof(T).Name} is not a test element type.");
    }

    public static T FromFloat<T>(float x)
    {
        if (typeof(T) == typeof(float)) return Unsafe.As<float, T>(ref x);
        if (typeof(T) == typeof(Half))
        {
            var h = (Half)x;
            return Unsafe.As<Half, T>(ref h);
        }
        if (typeof(T) == typeof(BFloat16))
        {
            var b = (BFloat16)x;
            return Unsafe.As<BFloat16, T>(ref b);
        }
        throw new NotSupportedException($"Element type {typeof(T).Name} is not a test element type.");
    }

    /// <summary>Rounds <paramref name="x"/> to <typeparamref name="T"/> and back.</summary>
    public static float Round<T>(float x) => ToFloat(FromFloat<T>(x));

    public static float[] ToFloats<T>(ReadOnlySpan<T> a)
    {
        var r = new float[a.Length];
        for (int i = 0; i < a.Length; i++) r[i] = ToFloat(a[i]);
        return r;
    }

    public static T[] FromFloats<T>(ReadOnlySpan<float> a)
    {
        var r = new T[a.Length];
        for (int i = 0; i < a.Length; i++) r[i] = FromFloat<T>(a[i]);
        return r;
    }

    public static T[] Filled<T>(int n, float value)
    {
        var r = new T[n];
        Array.Fill(r, FromFloat<T>(value));
        return r;
    }

    public static bool IsHalfPrecision<T>() => typeof(T) != typeof(float);

    public static string Name<T>() =>
        typeof(T) == typeof(float) ? "fp32" : typeof(T) == typeof(Half) ? "fp16" : typeof(T) == typeof(BFloat16) ? "bf16" : typeof(T).Name;
}
