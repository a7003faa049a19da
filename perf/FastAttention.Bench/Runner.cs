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

    /// <summary>Rounds of <see cref="MeasureAlternating"/>: at least 3, at most 15.</summary>
    public const int MinRounds = 3, MaxRounds = 15;

    /// <summary>
    /// Times two actions in alternating blocks: a round runs a block of A's calls then a block of B's (B first on
    /// odd rounds), so a shared machine's load drift hits both alike, while each implementation still runs its
    /// calls back to back as a real caller would. A call shorter than 50 ms gets one untimed call at the start of
    /// each block, which absorbs the other implementation's tail (thread pools that spin after their work, caches).
    /// A block lasts about 50 ms (1 to 20 calls, sized from the warm-ups). Stops after at least
    /// <see cref="MinRounds"/> rounds once both have <see cref="RunPolicy.MinRuns"/> calls and
    /// <see cref="RunPolicy.MinSeconds"/> each, or after <see cref="MaxRounds"/> rounds. Returns both measurements
    /// and the median over rounds of (B's block median ÷ A's block median).
    /// </summary>
    public static (Measurement A, Measurement B, double MedianRatioBOverA) MeasureAlternating(Action a, Action b, RunPolicy policy)
    {
        double EstimateSeconds(Action action)
        {
            for (int i = 0; i < policy.WarmUps - 1; i++) action();
            long t0 = Stopwatch.GetTimestamp();
            action();
            return Stopwatch.GetElapsedTime(t0).TotalSeconds;
        }
        double estA = EstimateSeconds(a), estB = EstimateSeconds(b);
        var timesA = new List<double>();
        var timesB = new List<double>();
        var ratios = new List<double>();
        double totalA = 0, totalB = 0;

        List<double> Block(Action action, double estimate, ref double total)
        {
            if (estimate < 0.05) action();
            int calls = Math.Clamp((int)Math.Ceiling(0.05 / Math.Max(estimate, 1e-6)), 1, 20);
            var block = new List<double>(calls);
            for (int i = 0; i < calls; i++)
            {
                long t0 = Stopwatch.GetTimestamp();
                action();
                double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                block.Add(seconds * 1e3);
                total += seconds;
            }
            return block;
        }

        for (int round = 0; round < MaxRounds; round++)
        {
            if (round >= MinRounds && timesA.Count >= policy.MinRuns && timesB.Count >= policy.MinRuns &&
                totalA >= policy.MinSeconds && totalB >= policy.MinSeconds)
            {
                break;
            }
            List<double> blockA, blockB;
            if (round % 2 == 0)
            {
                blockA = Block(a, estA, ref totalA);
                blockB = Block(b, estB, ref totalB);
            }
            else
            {
                blockB = Block(b, estB, ref totalB);
                blockA = Block(a, estA, ref totalA);
            }
            timesA.AddRange(blockA);
            timesB.AddRange(blockB);
            ratios.Add(Summarise(blockB).MedianMs / Summarise(blockA).MedianMs);
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
