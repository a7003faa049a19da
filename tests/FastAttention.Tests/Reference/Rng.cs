// Seeded random numbers for test inputs: SplitMix64 with a fixed sequence on every platform.

namespace FastAttention.Tests.Reference;

/// <summary>Deterministic random source (SplitMix64) for test data.</summary>
internal sealed class Rng(ulong seed)
{
    private ulong _state = seed * 0x9E3779B97F4A7C15UL + 0x1234567UL;

    public ulong NextULong()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1).</summary>
    public double NextDouble() => (NextULong() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [lo, hi] inclusive.</summary>
    public int Next(int lo, int hi) => lo + (int)(NextULong() % (ulong)(hi - lo + 1));

    public bool NextBool(double pTrue) => NextDouble() < pTrue;

    /// <summary>Standard normal (Box-Muller).</summary>
    public double NextNormal()
    {
        double u1 = 1.0 - NextDouble();
        double u2 = NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }

    /// <summary><paramref name="n"/> normal values times <paramref name="sigma"/>, rounded to <typeparamref name="T"/>.</summary>
    public T[] Normal<T>(int n, double sigma = 1.0)
    {
        var r = new T[n];
        for (int i = 0; i < n; i++) r[i] = Num.FromFloat<T>((float)(NextNormal() * sigma));
        return r;
    }

    /// <summary><paramref name="n"/> integers in [lo, hi] as <typeparamref name="T"/> (exact in every element type for small ranges).</summary>
    public T[] Integers<T>(int n, int lo, int hi)
    {
        var r = new T[n];
        for (int i = 0; i < n; i++) r[i] = Num.FromFloat<T>(Next(lo, hi));
        return r;
    }
}
