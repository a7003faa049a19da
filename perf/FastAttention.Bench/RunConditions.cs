// How busy the machine was with other work while the benchmark ran (from /proc/stat and our own CPU time).
using System.Diagnostics;
using System.Globalization;

namespace FastAttention.Bench;

/// <summary>
/// Samples the machine-wide busy CPU time (/proc/stat, including time stolen by a hypervisor) and
/// this process's own CPU time; the difference over the run is CPU time other processes took, which
/// shows up as lower peaks and slower, noisier attention timings.
/// </summary>
internal sealed class RunConditions
{
    private const double TicksPerSecond = 100; // USER_HZ on Linux.

    private readonly long _startTimestamp = Stopwatch.GetTimestamp();
    private readonly double? _startBusy = MachineBusySeconds();
    private readonly TimeSpan _startOwn = Process.GetCurrentProcess().TotalProcessorTime;

    /// <summary>Seconds since the sample was taken.</summary>
    public double ElapsedSeconds => Stopwatch.GetElapsedTime(_startTimestamp).TotalSeconds;

    /// <summary>
    /// Fraction of all CPUs used by other processes since the start, in [0, 1]; NaN where /proc/stat
    /// is not readable.
    /// </summary>
    public double OtherLoad()
    {
        double? busy = MachineBusySeconds();
        if (_startBusy is null || busy is null) return double.NaN;
        double own = (Process.GetCurrentProcess().TotalProcessorTime - _startOwn).TotalSeconds;
        double other = busy.Value - _startBusy.Value - own;
        double capacity = ElapsedSeconds * Environment.ProcessorCount;
        return capacity > 0 ? Math.Clamp(other / capacity, 0, 1) : double.NaN;
    }

    /// <summary>Busy seconds of all CPUs since boot: user, nice, system, irq, softirq, steal.</summary>
    private static double? MachineBusySeconds()
    {
        try
        {
            if (!File.Exists("/proc/stat")) return null;
            using var reader = new StreamReader("/proc/stat");
            string? line = reader.ReadLine();
            if (line is null || !line.StartsWith("cpu ", StringComparison.Ordinal)) return null;
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            // cpu user nice system idle iowait irq softirq steal [guest guest_nice (already in user/nice)]
            long Field(int i) => i < f.Length ? long.Parse(f[i], CultureInfo.InvariantCulture) : 0;
            long busy = Field(1) + Field(2) + Field(3) + Field(6) + Field(7) + Field(8);
            return busy / TicksPerSecond;
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}

/// <summary>The 1-, 5- and 15-minute load averages (/proc/loadavg); NaN where unavailable.</summary>
internal readonly record struct LoadSample(double One, double Five, double Fifteen)
{
    public static LoadSample Read()
    {
        try
        {
            if (File.Exists("/proc/loadavg"))
            {
                var f = File.ReadAllText("/proc/loadavg").Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length >= 3)
                {
                    return new LoadSample(double.Parse(f[0], CultureInfo.InvariantCulture), double.Parse(f[1], CultureInfo.InvariantCulture),
                        double.Parse(f[2], CultureInfo.InvariantCulture));
                }
            }
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            // Not available.
        }
        return new LoadSample(double.NaN, double.NaN, double.NaN);
    }

    /// <summary>"1.52, 1.20, 0.98" or "n/a".</summary>
    public override string ToString() => double.IsFinite(One)
        ? string.Create(CultureInfo.InvariantCulture, $"{One:F2}, {Five:F2}, {Fifteen:F2}")
        : "n/a";
}
