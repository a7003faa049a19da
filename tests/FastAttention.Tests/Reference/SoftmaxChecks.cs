// The fused-softmax acceptance check shared by the GPU and the emulated kernel tests: the double reference under the
// tolerance policy, and the CPU softmax within one rounding of T.

namespace FastAttention.Tests.Reference;

internal static class SoftmaxChecks
{
    /// <summary>
    /// <paramref name="actual"/> (from <paramref name="source"/>, e.g. "GPU") against the double reference of softmax
    /// over <paramref name="scores"/> <c>[B, H, Sq, Sk]</c> and against <see cref="CpuAttention.Softmax{T}"/>.
    /// </summary>
    public static void AssertMatches<T>(float[] actual, T[] scores, int B, int H, int Sq, int Sk, float scale, AttentionMask mask,
        string source, string what) where T : unmanaged
    {
        int[] dims = [B, H, Sq, Sk];
        var s = Num.ToFloats<T>(scores);
        var expected = ReferenceAttention.Softmax(s, B, H, Sq, Sk, scale, mask);
        if (Num.IsHalfPrecision<T>())
        {
            var naive = ReferenceAttention.NaiveSoftmax<T>(s, B, H, Sq, Sk, scale, mask);
            Tolerance.AssertWithinNaive(actual, expected, naive, $"{source} vs reference, {what}", dims);
        }
        else
        {
            Tolerance.AssertClose(actual, expected, $"{source} vs reference, {what}", dims);
        }
        var cpuOut = Num.Filled<T>(scores.Length, float.NaN);
        CpuAttention.Softmax<T>(Views.Bhqk(scores, B, H, Sq, Sk), Views.Bhqk(cpuOut, B, H, Sq, Sk), scale, mask);
        var cpu = Num.ToFloats<T>(cpuOut);
        double ulp = typeof(T) == typeof(float) ? 1e-4 : typeof(T) == typeof(Half) ? Math.Pow(2, -10) : Math.Pow(2, -7);
        var allowed = cpu.Select(c => ulp * Math.Abs(c) + 1e-6).ToArray();
        Tolerance.AssertWithin(actual, cpu.Select(c => (double)c).ToArray(), allowed, $"{source} vs CPU, {what}", dims);
    }
}
