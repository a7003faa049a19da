// Machine ceilings measured on the spot: FMA throughput (Vector256, Vector512) and DRAM read bandwidth.
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastAttention.Bench;

/// <summary>Measured ceilings of this machine for <see cref="Threads"/> threads; NaN = not available.</summary>
/// <param name="Avx2GFlops">fp32 FMA peak with 256-bit vectors (AVX2/FMA), GFLOP/s.</param>
/// <param name="Avx512GFlops">fp32 FMA peak with 512-bit vectors, GFLOP/s; NaN when Vector512 is not accelerated.</param>
/// <param name="DramGBs">Read bandwidth summing a 512 MB float array, GB/s (1e9 bytes).</param>
/// <param name="Threads">Threads used for every figure.</param>
internal sealed record PeakResult(double Avx2GFlops, double Avx512GFlops, double DramGBs, int Threads);

/// <summary>
/// Measures the FMA peak (a tight loop of independent fused multiply-adds, 12 accumulators per
/// thread so the FMA pipes never wait on latency) and the DRAM read bandwidth. Each figure is the
/// best of several repetitions: a peak is a ceiling, not a typical value.
/// </summary>
internal static class Peak
{
    /// <summary>Independent accumulator chains per thread (FMA latency x pipes is 8 on Zen 4/5, Intel cores).</summary>
    private const int Chains = 12;

    /// <summary>Floats in the bandwidth array: 512 MB.</summary>
    private const long BandwidthFloats = 512L * 1024 * 1024 / sizeof(float);

    /// <summary>Floats in the bandwidth array of a smoke run: 32 MB (checks the code path, not the machine).</summary>
    private const long SmokeBandwidthFloats = 32L * 1024 * 1024 / sizeof(float);

    /// <summary>Measures all figures. A quick run uses fewer repetitions; a smoke run one short repetition and a small array.</summary>
    public static PeakResult Measure(int threads, RunScale scale, Action<string> log)
    {
        bool quick = scale != RunScale.Full;
        int reps = scale == RunScale.Smoke ? 1 : quick ? 3 : 5;
        double secondsPerRep = scale == RunScale.Smoke ? 0.02 : quick ? 0.25 : 0.5;

        double avx2 = double.NaN;
        if (Fma.IsSupported && Vector256.IsHardwareAccelerated)
        {
            avx2 = MeasureFma(Fma256, Vector256<float>.Count, threads, reps, secondsPerRep);
            log($"FMA peak, Vector256: {avx2:F1} GFLOP/s on {threads} thread(s)");
        }
        double avx512 = double.NaN;
        if (Vector512.IsHardwareAccelerated)
        {
            avx512 = MeasureFma(Fma512, Vector512<float>.Count, threads, reps, secondsPerRep);
            log($"FMA peak, Vector512: {avx512:F1} GFLOP/s on {threads} thread(s)");
        }
        double dram = MeasureDram(threads, reps, scale == RunScale.Smoke ? SmokeBandwidthFloats : BandwidthFloats);
        log($"DRAM read: {dram:F1} GB/s on {threads} thread(s)");
        return new PeakResult(avx2, avx512, dram, threads);
    }

    private static double MeasureFma(Func<long, float> kernel, int lanes, int threads, int reps, double secondsPerRep)
    {
        double flopsPerIteration = Chains * lanes * 2.0;
        // Calibrate on one thread (compiles the kernel, then sizes the loop for the target time).
        kernel(1000);
        long iterations = 1 << 20;
        while (true)
        {
            long t0 = Stopwatch.GetTimestamp();
            kernel(iterations);
            double s = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            if (s > Math.Min(0.05, secondsPerRep / 2))
            {
                iterations = (long)(iterations * secondsPerRep / s);
                break;
            }
            iterations *= 4;
        }

        double best = 0;
        for (int r = 0; r < reps; r++)
        {
            double seconds = OnThreads(threads, _ => kernel(iterations));
            best = Math.Max(best, flopsPerIteration * iterations * threads / seconds / 1e9);
        }
        return best;
    }

    private static double MeasureDram(int threads, int reps, long floats)
    {
        // Backed like the KV-cache pools (huge pages where the OS allows), so decode is compared with
        // the best read of the same kind of memory, not with 4 KiB pages it no longer uses.
        float[] data = FastAttention.Cpu.Caching.CachePool.Allocate<float>((int)floats);
        long chunk = (floats + threads - 1) / threads;
        // Touch every page from the threads that will read it (first-touch placement), with values
        // that keep the sum finite.
        OnThreads(threads, t =>
        {
            var span = Slice(data, t, chunk);
            span.Fill(1f / 1024);
            return 0f;
        });
        Sum(Slice(data, 0, chunk)[..1024]);

        double best = 0;
        float sink = 0;
        for (int r = 0; r < reps; r++)
        {
            var partial = new float[threads];
            double seconds = OnThreads(threads, t => partial[t] = Sum(Slice(data, t, chunk)));
            sink += partial.Sum();
            best = Math.Max(best, floats * sizeof(float) / seconds / 1e9);
        }
        GC.KeepAlive(sink);
        return best;
    }

    private static Span<float> Slice(float[] data, int thread, long chunk)
    {
        long start = Math.Min(thread * chunk, data.Length);
        long end = Math.Min(start + chunk, data.Length);
        return data.AsSpan((int)start, (int)(end - start));
    }

    /// <summary>
    /// Runs <paramref name="work"/> on <paramref name="threads"/> dedicated threads that start together
    /// (barrier) and returns the wall time from the start signal until the last one finished.
    /// </summary>
    private static double OnThreads(int threads, Func<int, float> work)
    {
        using var start = new Barrier(threads + 1);
        var results = new float[threads];
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int id = t;
            workers[t] = new Thread(() =>
            {
                start.SignalAndWait();
                results[id] = work(id);
            }) { IsBackground = true, Name = $"peak-{id}" };
            workers[t].Start();
        }
        start.SignalAndWait();
        long t0 = Stopwatch.GetTimestamp();
        foreach (var w in workers) w.Join();
        double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        GC.KeepAlive(results);
        return seconds;
    }

    /// <summary>12 independent chains c = c·a + b on 256-bit vectors; returns a value so nothing is dead code.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Fma256(long iterations)
    {
        // a < 1 and b > 0: every chain converges to b / (1 - a) = 1, no overflow and no denormals.
        var a = Vector256.Create(0.999999f);
        var b = Vector256.Create(0.000001f);
        Vector256<float> c0 = Vector256.Create(0.10f), c1 = Vector256.Create(0.11f), c2 = Vector256.Create(0.12f),
            c3 = Vector256.Create(0.13f), c4 = Vector256.Create(0.14f), c5 = Vector256.Create(0.15f),
            c6 = Vector256.Create(0.16f), c7 = Vector256.Create(0.17f), c8 = Vector256.Create(0.18f),
            c9 = Vector256.Create(0.19f), c10 = Vector256.Create(0.20f), c11 = Vector256.Create(0.21f);
        for (long i = 0; i < iterations; i++)
        {
            c0 = Fma.MultiplyAdd(c0, a, b);
            c1 = Fma.MultiplyAdd(c1, a, b);
            c2 = Fma.MultiplyAdd(c2, a, b);
            c3 = Fma.MultiplyAdd(c3, a, b);
            c4 = Fma.MultiplyAdd(c4, a, b);
            c5 = Fma.MultiplyAdd(c5, a, b);
            c6 = Fma.MultiplyAdd(c6, a, b);
            c7 = Fma.MultiplyAdd(c7, a, b);
            c8 = Fma.MultiplyAdd(c8, a, b);
            c9 = Fma.MultiplyAdd(c9, a, b);
            c10 = Fma.MultiplyAdd(c10, a, b);
            c11 = Fma.MultiplyAdd(c11, a, b);
        }
        return Vector256.Sum(((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11)));
    }

    /// <summary>12 independent chains c = c·a + b on 512-bit vectors.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float Fma512(long iterations)
    {
        var a = Vector512.Create(0.999999f);
        var b = Vector512.Create(0.000001f);
        Vector512<float> c0 = Vector512.Create(0.10f), c1 = Vector512.Create(0.11f), c2 = Vector512.Create(0.12f),
            c3 = Vector512.Create(0.13f), c4 = Vector512.Create(0.14f), c5 = Vector512.Create(0.15f),
            c6 = Vector512.Create(0.16f), c7 = Vector512.Create(0.17f), c8 = Vector512.Create(0.18f),
            c9 = Vector512.Create(0.19f), c10 = Vector512.Create(0.20f), c11 = Vector512.Create(0.21f);
        for (long i = 0; i < iterations; i++)
        {
            c0 = Vector512.FusedMultiplyAdd(c0, a, b);
            c1 = Vector512.FusedMultiplyAdd(c1, a, b);
            c2 = Vector512.FusedMultiplyAdd(c2, a, b);
            c3 = Vector512.FusedMultiplyAdd(c3, a, b);
            c4 = Vector512.FusedMultiplyAdd(c4, a, b);
            c5 = Vector512.FusedMultiplyAdd(c5, a, b);
            c6 = Vector512.FusedMultiplyAdd(c6, a, b);
            c7 = Vector512.FusedMultiplyAdd(c7, a, b);
            c8 = Vector512.FusedMultiplyAdd(c8, a, b);
            c9 = Vector512.FusedMultiplyAdd(c9, a, b);
            c10 = Vector512.FusedMultiplyAdd(c10, a, b);
            c11 = Vector512.FusedMultiplyAdd(c11, a, b);
        }
        return Vector512.Sum(((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11)));
    }

    /// <summary>
    /// Sum of a span with four independent vector accumulators (bandwidth-bound); compiled fully optimised
    /// on first call, so a plain-read timing never runs tier-0 code (TensorPrimitives.Sum does while it tiers up).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    internal static float Sum(ReadOnlySpan<float> x)
    {
        ref float p = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        int n = x.Length, i = 0;
        float tail = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            int w = Vector512<float>.Count;
            Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
            for (; i <= n - 4 * w; i += 4 * w)
            {
                s0 += Vector512.LoadUnsafe(ref p, (nuint)i);
                s1 += Vector512.LoadUnsafe(ref p, (nuint)(i + w));
                s2 += Vector512.LoadUnsafe(ref p, (nuint)(i + 2 * w));
                s3 += Vector512.LoadUnsafe(ref p, (nuint)(i + 3 * w));
            }
            tail = Vector512.Sum((s0 + s1) + (s2 + s3));
        }
        else
        {
            int w = Vector256<float>.Count;
            Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
            for (; i <= n - 4 * w; i += 4 * w)
            {
                s0 += Vector256.LoadUnsafe(ref p, (nuint)i);
                s1 += Vector256.LoadUnsafe(ref p, (nuint)(i + w));
                s2 += Vector256.LoadUnsafe(ref p, (nuint)(i + 2 * w));
                s3 += Vector256.LoadUnsafe(ref p, (nuint)(i + 3 * w));
            }
            tail = Vector256.Sum((s0 + s1) + (s2 + s3));
        }
        for (; i < n; i++) tail += Unsafe.Add(ref p, i);
        return tail;
    }
}
