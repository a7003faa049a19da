// Timing policy: warm-ups, then repetitions until both a run count and a total time are reached; median and spread.
using System.Diagnostics;

namespace FastAttention.Bench;

/// <summary>How big a run is: <see cref="Smoke"/> (tiny shapes, checks the pipeline), <see cref="Quick"/> (about a minute), <see cref="Full"/> (thorough).</summary>
internal enum RunScale
{
    Smoke,
    Quick,
    Full,
}

/// <summary>How one case is timed.</summary>
/// <param name="WarmUps">Untimed calls first (JIT tiers, page faults, thread-pool spin-up).</param>
/// <param name="MinRuns">Timed calls at least.</param>
/// <param name="MinSeconds">Total timed seconds at least (after <paramref name="MinRuns"/>).</param>
/// <param name="MaxRuns">Timed calls at most, whatever the time.</param>
internal sealed record RunPolicy(int WarmUps, int MinRuns, double MinSeconds, int MaxRuns)
{
    /// <summary>Default run: 1 warm-up, at least 5 runs and 0.75 s.</summary>
    public static RunPolicy Quick { get; } = new(WarmUps: 1, MinRuns: 5, MinSeconds: 0.75, MaxRuns: 50);

    /// <summary>Full sweep: 2 warm-ups, at least 5 runs and 1 s.</summary>
    public static RunPolicy Full { get; } = new(WarmUps: 2, MinRuns: 5, MinSeconds: 1.0, MaxRuns: 100);

    /// <summary>Smoke run (tiny shapes, tests): 1 warm-up, 3 runs; the numbers mean nothing.</summary>
    public static RunPolicy Smoke { get; } = new(WarmUps: 1, MinRuns: 3, MinSeconds: 0, MaxRuns: 3);

    /// <summary>The policy of a <see cref="RunScale"/>.</summary>
    public static RunPolicy For(RunScale scale) => scale switch
    {
        RunScale.Smoke => Smoke,
        RunScale.Quick => Quick,
        _ => Full,
    };
}

/// <summary>Wall times of one case, in milliseconds.</summary>
internal readonly record struct Measurement(double MedianMs, double MinMs, double MaxMs, int Runs)
{
    /// <summary>Relative half-spread (max − min) / (2 · median): how noisy the case was.</summary>
    public double Spread => MedianMs > 0 ? (MaxMs - MinMs) / (2 * MedianMs) : 0;
}

/// <summary>Times an action under a <see cref="RunPolicy"/>.</summary>
internal static class Runner
{
    /// <summary>Warms up, then times <paramref name="action"/> until the policy is met; returns median, min and max.</summary>
    public static Measurement Measure(Action action, RunPolicy policy)
    {
        for (int i = 0; i < policy.WarmUps; i++) action();

        var times = new List<double>();
        double total = 0;
        while (times.Count < policy.MaxRuns && (times.Count < policy.MinRuns || total < policy.MinSeconds))
        {
            long t0 = Stopwatch.GetTimestamp();
            action();
            double s = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            times.Add(s * 1e3);
            total += s;
        }
        return Summarise(times);
    }

    /// <summary>
    /// Times two actions in alternating rounds (A then B, then B then A, ...) after their warm-ups, so both see
    /// the same machine conditions on a shared machine; stops when both have <see cref="RunPolicy.MinRuns"/> runs
    /// and <see cref="RunPolicy.MinSeconds"/> each (or <see cref="RunPolicy.MaxRuns"/> rounds). Returns both
    /// measurements and the median over rounds of (time of B ÷ time of A): a ratio that slow drifts in the
    /// machine's load cancel out of.
    /// </summary>
    public static (Measurement A, Measurement B, double MedianRatioBOverA) MeasurePaired(Action a, Action b, RunPolicy policy)
    {
        for (int i = 0; i < policy.WarmUps; i++)
        {
            a();
            b();
        }
        var timesA = new List<double>();
        var timesB = new List<double>();
        var ratios = new List<double>();
        double totalA = 0, totalB = 0;
        while (timesA.Count < policy.MaxRuns &&
               (timesA.Count < policy.MinRuns || totalA < policy.MinSeconds || totalB < policy.MinSeconds))
        {
            bool aFirst = timesA.Count % 2 == 0;
            double ta = 0, tb = 0;
            for (int k = 0; k < 2; k++)
            {
                bool runA = (k == 0) == aFirst;
                long t0 = Stopwatch.GetTimestamp();
                (runA ? a : b)();
                double s = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                if (runA) ta = s; else tb = s;
            }
            timesA.Add(ta * 1e3);
            timesB.Add(tb * 1e3);
            ratios.Add(tb / ta);
            totalA += ta;
            totalB += tb;
        }
        return (Summarise(timesA), Summarise(timesB), Summarise(ratios).MedianMs);
    }

    /// <summary>Median (mean of the middle two for an even count), min and max of <paramref name="timesMs"/>.</summary>
    public static Measurement Summarise(IReadOnlyList<double> timesMs)
    {
        if (timesMs.Count == 0) throw new ArgumentException("no timings", nameof(timesMs));
        var sorted = timesMs.Order().ToArray();
        int n = sorted.Length;
        double median = n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
        return new Measurement(median, sorted[0], sorted[^1], n);
    }
}
