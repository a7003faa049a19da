// What `bench` and `compare` share: the header, the backend check, the measured peak, collecting tables and rows, the
// run-conditions footer, and writing --out / --json / --csv.
using System.Text;
using FastAttention.Bench.Output;
using FastAttention.Runtime;

namespace FastAttention.Bench;

/// <summary>One run of <c>bench</c> or <c>compare</c>: prints tables as they come and keeps them for the output files.</summary>
internal sealed class RunSession
{
    private readonly CliConsole _console;
    private readonly RunOptions _options;
    private readonly StringBuilder _markdown = new();
    private readonly RunConditions _conditions = new();
    private readonly LoadSample _loadStart = LoadSample.Read();
    private readonly DateTimeOffset _date = DateTimeOffset.UtcNow;
    private readonly string _command;
    private readonly MachineInfo _machine = MachineInfo.Detect();

    public RunSession(CliConsole console, RunOptions options, string title, string[] args)
    {
        _console = console;
        _options = options;
        _command = Cli.CommandLine(args);
        Progress = new ProgressReporter(console);
        string scale = options.Scale switch { RunScale.Smoke => "smoke", RunScale.Quick => "quick", _ => "full" };
        Mode = scale;
        Emit(Report.Header($"{title} ({scale})", _machine, options.Threads, _date, _command, _loadStart));
        if (!_machine.OptimizedBuild)
        {
            Warn("this is a Debug build: timings are not representative; use -c Release.");
        }
        if (_loadStart.One > Environment.ProcessorCount)
        {
            Warn($"the load average is {_loadStart.One:F2} on {Environment.ProcessorCount} logical cores: other work is running and timings will be noisy.");
        }
    }

    public ProgressReporter Progress { get; }

    public RunOptions Options => _options;

    public string Mode { get; }

    public RunPolicy Policy => RunPolicy.For(_options.Scale);

    public PeakResult? Peak { get; private set; }

    public List<ResultRow> Rows { get; } = [];

    public List<string> Messages { get; } = [];

    /// <summary>Prints a table and keeps its markdown for --out.</summary>
    public void Emit(ReportTable table)
    {
        _console.Write(table);
        _markdown.Append(table.ToMarkdown());
    }

    /// <summary>A warning on stderr, also kept in the JSON "messages".</summary>
    public void Warn(string message)
    {
        _console.Warn(message);
        Messages.Add(message);
    }

    /// <summary>
    /// Checks the --backend choice. The CPU always runs. Returns true when CUDA is usable and asked for ("auto" or
    /// "cuda"): the caller then runs its GPU part; otherwise it says plainly why there is none.
    /// </summary>
    public bool CheckBackend()
    {
        if (_options.Backend == "cpu") return false;
        BackendSelection selection = BackendSelector.Select(BackendPreference.Auto);
        if (selection.Backend != ComputeBackend.Cuda)
        {
            if (_options.Backend == "cuda")
            {
                Warn($"the CUDA backend is unavailable: {selection.Reason} The GPU rows are skipped; the CPU rows follow.");
            }
            else
            {
                Progress.Log($"backend auto: CPU only ({selection.Reason})");
            }
            return false;
        }
        Progress.Log($"backend {_options.Backend}: CUDA is usable ({selection.Device}); the CPU rows come first, then the GPU benchmark.");
        return true;
    }

    /// <summary>Measures the machine peak (FMA, DRAM) and prints it.</summary>
    public PeakResult MeasurePeak()
    {
        var peak = Progress.Section("machine peak (FMA, DRAM read)", 3, log => FastAttention.Bench.Peak.Measure(_options.Threads, _options.Scale, log));
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        Peak = peak;
        Emit(Report.PeakTable(peak));
        Rows.AddRange(Report.PeakRows(peak));
        return peak;
    }

    /// <summary>Prints the run conditions and writes the files asked for.</summary>
    public int Finish()
    {
        var loadEnd = LoadSample.Read();
        Emit(Report.Conditions(_conditions, _loadStart, loadEnd));
        double other = _conditions.OtherLoad();
        if (_options.OutFile is { } md)
        {
            WriteFile(md, _markdown.ToString());
            Progress.Log($"wrote {md}");
        }
        if (_options.JsonFile is { } json)
        {
            var meta = new RunMetadata(_command, "FastAttention.Bench", _date, Mode, _options.Threads, _machine, Peak, Messages, _loadStart, loadEnd,
                double.IsFinite(other) ? other : null, _conditions.ElapsedSeconds);
            WriteFile(json, ResultsFile.Json(meta, Rows));
            Progress.Log($"wrote {json}");
        }
        if (_options.CsvFile is { } csv)
        {
            WriteFile(csv, ResultsFile.Csv(Rows));
            Progress.Log($"wrote {csv}");
        }
        return ExitCodes.Ok;
    }

    /// <summary>Writes <paramref name="text"/> to <paramref name="path"/>, creating its folder.</summary>
    public static void WriteFile(string path, string text)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        File.WriteAllText(path, text);
    }
}
