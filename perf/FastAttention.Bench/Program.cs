// Entry point: parses the arguments, measures the machine peak, runs the sweeps, prints markdown.
//
//   dotnet run -c Release --project perf/FastAttention.Bench                      quick run (~1-2 min)
//   dotnet run -c Release --project perf/FastAttention.Bench -- --full            full sweep
//   dotnet run -c Release --project perf/FastAttention.Bench -- --out FILE.md --threads 2
//   dotnet run -c Release --project perf/FastAttention.Bench -- --only sgemm           one section
//
// Tables go to stdout (and to --out FILE); progress goes to stderr.
using System.Globalization;
using System.Text;

namespace FastAttention.Bench;

/// <summary>Parsed command line.</summary>
/// <param name="Full">Full sweep instead of the quick default.</param>
/// <param name="OutFile">Also write the markdown here; null = stdout only.</param>
/// <param name="Threads">Worker threads for peak measurement and attention.</param>
/// <param name="Help">Print usage and exit.</param>
/// <param name="Sections">Sections to run after the peak measurement (<see cref="Program.SectionNames"/>).</param>
internal sealed record BenchOptions(bool Full, string? OutFile, int Threads, bool Help, IReadOnlySet<string> Sections);

internal static class Program
{
    public const string Usage =
        """
        Usage: dotnet run -c Release --project perf/FastAttention.Bench [-- OPTIONS]

        Measures this machine's FMA peak and DRAM bandwidth, then times CPU attention
        (dense sweep and block-sparse vs dense) and the fp32 GEMM, and prints markdown tables.

        Options:
          --full          full sweep (S 512..8192, fp32/fp16/bf16; GEMM 512..4096); default is a quick run
          --out FILE      also write the markdown report to FILE
          --threads N     worker threads (default: all processors)
          --only LIST     run only these sections, comma-separated: dense, sparse, sgemm, decode, caching
                          (the machine peak is always measured)
          -h, --help      show this help
        """;

    /// <summary>Sections after the peak measurement, in run order.</summary>
    public static readonly string[] SectionNames = ["dense", "sparse", "sgemm", "decode", "caching"];

    public static int Main(string[] args)
    {
        BenchOptions options;
        try
        {
            options = Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine();
            Console.Error.WriteLine(Usage);
            return 2;
        }
        if (options.Help)
        {
            Console.WriteLine(Usage);
            return 0;
        }

        try
        {
            Run(options, args);
            return 0;
        }
        catch (NotImplementedException e)
        {
            Console.Error.WriteLine($"error: the CPU engine is not implemented yet ({e.Message})");
            return 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    /// <summary>Parses the arguments.</summary>
    /// <exception cref="ArgumentException">An unknown option, a missing or invalid value.</exception>
    public static BenchOptions Parse(IReadOnlyList<string> args)
    {
        bool full = false, help = false;
        string? outFile = null;
        int threads = Environment.ProcessorCount;
        IReadOnlySet<string> sections = new HashSet<string>(SectionNames);
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            string? inline = null;
            int eq = arg.IndexOf('=');
            if (arg.StartsWith("--", StringComparison.Ordinal) && eq > 2)
            {
                inline = arg[(eq + 1)..];
                arg = arg[..eq];
            }
            switch (arg)
            {
                case "--full":
                    NoValue(arg, inline);
                    full = true;
                    break;
                case "-h" or "--help" or "-?":
                    NoValue(arg, inline);
                    help = true;
                    break;
                case "--out":
                    outFile = inline ?? Next(args, ref i, arg);
                    if (string.IsNullOrWhiteSpace(outFile))
                    {
                        throw new ArgumentException("--out needs a file name.");
                    }
                    break;
                case "--threads":
                    string text = inline ?? Next(args, ref i, arg);
                    if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out threads) || threads < 1)
                    {
                        throw new ArgumentException($"--threads must be a whole number >= 1, got '{text}'.");
                    }
                    break;
                case "--only":
                    string list = inline ?? Next(args, ref i, arg);
                    var chosen = new HashSet<string>(StringComparer.Ordinal);
                    foreach (string name in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    {
                        if (!SectionNames.Contains(name))
                        {
                            throw new ArgumentException($"--only: unknown section '{name}'; expected {string.Join(", ", SectionNames)}.");
                        }
                        chosen.Add(name);
                    }
                    if (chosen.Count == 0)
                    {
                        throw new ArgumentException("--only needs at least one section.");
                    }
                    sections = chosen;
                    break;
                default:
                    throw new ArgumentException($"unknown argument '{args[i]}'.");
            }
        }
        return new BenchOptions(full, outFile, threads, help, sections);
    }

    private static string Next(IReadOnlyList<string> args, ref int i, string name)
    {
        if (i + 1 >= args.Count || args[i + 1].StartsWith("--", StringComparison.Ordinal))
        {
            throw new ArgumentException($"{name} needs a value.");
        }
        return args[++i];
    }

    private static void NoValue(string name, string? inline)
    {
        if (inline is not null)
        {
            throw new ArgumentException($"{name} takes no value, got '{name}={inline}'.");
        }
    }

    private static void Run(BenchOptions o, string[] args)
    {
        if (o.OutFile is not null)
        {
            string? dir = Path.GetDirectoryName(Path.GetFullPath(o.OutFile));
            if (dir is not null) Directory.CreateDirectory(dir);
        }

        var conditions = new RunConditions();
        var policy = o.Full ? RunPolicy.Full : RunPolicy.Quick;
        var report = new StringBuilder();
        void Emit(string markdown)
        {
            Console.WriteLine(markdown);
            report.AppendLine(markdown);
        }
        static void Log(string line) => Console.Error.WriteLine($"[bench] {line}");

        string command = "dotnet run -c Release --project perf/FastAttention.Bench" +
                         (args.Length > 0 ? " -- " + string.Join(' ', args.Select(Quote)) : "");
        var machine = MachineInfo.Detect();
        Emit(Report.Header(machine, o.Threads, o.Full, DateTimeOffset.UtcNow, command));

        Log("measuring machine peak...");
        var peak = Peak.Measure(o.Threads, quick: !o.Full, Log);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Emit(Report.PeakTable(peak));

        if (o.Sections.Contains("dense"))
        {
            var cases = Sweeps.DenseCases(o.Full);
            Log($"dense attention: {cases.Count} cases");
            var dense = Sweeps.RunDense(cases, o.Threads, policy, Log);
            Emit(Report.DenseTable(dense, peak));
        }

        if (o.Sections.Contains("sparse"))
        {
            Log("block-sparse vs dense...");
            var (denseBaseline, sparse) = Sweeps.RunSparse(o.Threads, policy, Log);
            Emit(Report.SparseTable(denseBaseline, sparse));
        }

        if (o.Sections.Contains("sgemm"))
        {
            var gemmCases = Sweeps.SgemmCases(o.Full);
            Log($"sgemm: {gemmCases.Count} cases");
            var gemm = Sweeps.RunSgemm(gemmCases, o.Threads, policy, Log);
            Emit(Report.SgemmTable(gemm, peak));
        }

        if (o.Sections.Contains("decode"))
        {
            Log("decode over KV caches...");
            Emit(Report.DecodeTable(DecodeSweeps.RunBandwidth(o.Full, o.Threads, policy, Log)));
        }

        if (o.Sections.Contains("caching"))
        {
            Log("caching speedup...");
            Emit(Report.CachingTable(DecodeSweeps.RunCaching(o.Full, o.Threads, policy, Log)));
        }
        Emit(Report.Conditions(conditions));

        if (o.OutFile is not null)
        {
            File.WriteAllText(o.OutFile, report.ToString());
            Log($"wrote {o.OutFile}");
        }
    }

    private static string Quote(string arg) =>
        arg.Length > 0 && arg.All(ch => char.IsAsciiLetterOrDigit(ch) || "-_./=:+,".Contains(ch)) ? arg : "'" + arg.Replace("'", "'\\''") + "'";
}
