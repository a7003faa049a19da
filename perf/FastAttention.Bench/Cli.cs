// The command line: `info`, `bench`, `compare` (System.CommandLine), their options, validation (exit code 2) and dispatch.
using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using FastAttention.Bench.Output;
using FastAttention.Bench.Peers;

namespace FastAttention.Bench;

/// <summary>Exit codes.</summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>A run failed (e.g. an output file could not be written).</summary>
    public const int Failed = 1;
    /// <summary>Bad arguments.</summary>
    public const int BadArguments = 2;
}

/// <summary>Options shared by <c>bench</c> and <c>compare</c>, as parsed.</summary>
internal sealed record RunOptions(
    RunScale Scale,
    int Threads,
    string Backend,
    string? JsonFile,
    string? CsvFile,
    string? OutFile,
    IReadOnlyList<int>? Seqs,
    IReadOnlyList<int>? HeadDims);

/// <summary>Builds and runs the command line.</summary>
internal static class Cli
{
    /// <summary>The command prefix shown in reports and help.</summary>
    public const string Tool = "dotnet run -c Release --project perf/FastAttention.Bench --";

    /// <summary>Sections of <c>bench</c>, in run order (memory first, so its "first call" is as cold as a process gets).</summary>
    public static readonly string[] Sections = ["memory", "dense", "sparse", "sgemm", "decode", "caching"];

    public static readonly string[] DTypes = ["fp32", "fp16", "bf16"];

    public static readonly string[] Backends = ["auto", "cpu", "cuda"];

    /// <summary>Parses and runs <paramref name="args"/>; returns the exit code.</summary>
    public static int Run(string[] args, CliConsole console)
    {
        args = Normalise(args);
        var root = Build(console, args);
        ParseResult parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            var errors = parse.Errors.DistinctBy(e => e.Message).ToList();
            if (errors.Count > 1)
            {
                // "Required command was not provided" adds nothing next to "Unrecognized command 'x'".
                errors.RemoveAll(e => e.Message.StartsWith("Required command", StringComparison.Ordinal));
            }
            foreach (var error in errors)
            {
                console.Error.WriteLine($"error: {error.Message}");
            }
            string command = parse.CommandResult.Command is RootCommand ? "" : parse.CommandResult.Command.Name + " ";
            console.Error.WriteLine($"Run '{Tool} {command}--help' for usage.");
            console.Error.Flush();
            return ExitCodes.BadArguments;
        }
        return parse.Invoke(new InvocationConfiguration { Output = console.Out, Error = console.Error, EnableDefaultExceptionHandler = false });
    }

    /// <summary>
    /// No arguments = <c>bench --quick</c> (the README's first command). Arguments that start with an option
    /// (the old single-command syntax, e.g. <c>--out FILE --threads 2</c>) run <c>bench</c>, quick unless
    /// <c>--full</c> is given. Help and version requests pass through.
    /// </summary>
    public static string[] Normalise(string[] args)
    {
        if (args.Length == 0) return ["bench", "--quick"];
        string first = args[0];
        bool option = first.StartsWith('-') && first is not ("-h" or "--help" or "-?" or "/?" or "/h" or "--version");
        if (!option) return args;
        bool scaleGiven = args.Any(a => a is "--full" or "--quick" or "--smoke");
        return scaleGiven ? ["bench", .. args] : ["bench", "--quick", .. args];
    }

    private static RootCommand Build(CliConsole console, string[] args)
    {
        var root = new RootCommand(
            "FastAttention benchmark and inspection CLI. With no arguments: `bench --quick` (about a minute, CPU only).\n" +
            "Tables go to stdout (Spectre tables on a terminal, markdown otherwise); progress to stderr (bars on a terminal, " +
            "plain lines otherwise). Exit codes: 0 ok, 1 a run failed, 2 bad arguments.");

        // ---- info
        var infoJson = new Option<string?>("--json") { Description = "Also write the report as JSON to FILE (schema fastattention-info/1).", HelpName = "FILE" };
        var info = new Command("info", "The machine: CPU features and threads, .NET, CUDA driver / NVRTC / cuBLAS versions, GPUs, which backend Auto picks and why.")
        {
            infoJson,
        };
        info.SetAction(parse => Guard(console, () => RunInfo(console, parse.GetValue(infoJson), args)));
        root.Add(info);

        // ---- bench
        var bench = new Command("bench", "The benchmark suite on this machine: measured peaks, then memory, dense sweep, block-sparse vs dense, " +
                                         "sgemm, decode bandwidth, caching speedup. Default: the thorough run; --quick: about a minute.");
        var common = new CommonOptions(bench);
        var only = new Option<string?>("--only") { Description = $"Run only these sections, comma-separated: {string.Join(", ", Sections)} (the peak is always measured).", HelpName = "LIST" };
        only.Validators.Add(r => ValidateSet(r, Sections));
        var dtype = new Option<string?>("--dtype") { Description = "Dense sweep element types, comma-separated: fp32, fp16, bf16.", HelpName = "LIST" };
        dtype.Validators.Add(r => ValidateSet(r, DTypes));
        var full = new Option<bool>("--full") { Description = "The thorough run (the default of `bench`; kept for the old syntax).", Hidden = true };
        bench.Add(only);
        bench.Add(dtype);
        bench.Add(full);
        bench.Validators.Add(r => ValidateScale(r, common, full));
        bench.SetAction(parse => Guard(console, () =>
        {
            var options = common.Read(parse);
            string? onlyText = parse.GetValue(only);
            var sections = onlyText is null ? Sections.ToHashSet() : SplitList(onlyText).ToHashSet();
            var dtypes = parse.GetValue(dtype) is { } d ? SplitList(d) : null;
            return BenchCommand.Run(console, options, sections, dtypes, args);
        }));
        root.Add(bench);

        // ---- compare
        var compare = new Command("compare", "The same attention shapes through FastAttention and peers in this process, as ratios: " +
                                             "ONNX Runtime's CPU provider and a naive C# baseline (materialised scores); " +
                                             "GPU peers (PyTorch SDPA) merged from perf/peers/torch_sdpa.py's JSON with --merge-json.");
        var compareCommon = new CommonOptions(compare);
        var peers = new Option<string?>("--peers") { Description = $"Peers to run, comma-separated: {string.Join(", ", Compare.PeerNames)} (default: all). `none` runs FastAttention alone.", HelpName = "LIST" };
        peers.Validators.Add(r => ValidateSet(r, [.. Compare.PeerNames, "none"]));
        var merge = new Option<string[]>("--merge-json") { Description = "Merge the rows of a results JSON (e.g. from perf/peers/torch_sdpa.py) into the table and the output files. Repeatable.", HelpName = "FILE", AllowMultipleArgumentsPerToken = false };
        merge.Validators.Add(r =>
        {
            foreach (string f in r.GetValueOrDefault<string[]>() ?? [])
            {
                if (!File.Exists(f)) r.AddError($"--merge-json: file '{f}' does not exist.");
            }
        });
        compare.Add(peers);
        compare.Add(merge);
        compare.Validators.Add(r => ValidateScale(r, compareCommon, null));
        compare.SetAction(parse => Guard(console, () =>
        {
            var options = compareCommon.Read(parse);
            string? peerText = parse.GetValue(peers);
            var peerSet = peerText is null ? Compare.PeerNames.ToHashSet() : SplitList(peerText).Where(p => p != "none").ToHashSet();
            return CompareCommand.Run(console, options, peerSet, parse.GetValue(merge) ?? [], args);
        }));
        root.Add(compare);

        // ---- gpu
        var gpuQuick = new Option<bool>("--quick") { Description = "Fewer shapes (fp16 only, three sequence lengths) and 5 timed calls instead of 10." };
        var gpuJson = new Option<string?>("--json") { Description = $"Also write the results as JSON to FILE (schema {Gpu.GpuCommand.Schema}: device, peak HBM, kernels' registers/spills, rows).", HelpName = "FILE" };
        var gpuOnly = new Option<string?>("--only") { Description = $"Run only these sections, comma-separated: {string.Join(", ", Gpu.GpuCommand.Sections)}.", HelpName = "LIST" };
        gpuOnly.Validators.Add(r => ValidateSet(r, Gpu.GpuCommand.Sections));
        var gpuProbe = new Option<bool>("--probe") { Description = $"Only report whether a CUDA device is usable: exit 0 if so, {Gpu.GpuCommand.NoDevice} if not." };
        var gpuWarm = new Option<bool>("--warm") { Description = "Only compile every kernel specialisation for the device's architecture, in parallel over the cores, into the kernel cache ($FASTATTN_KERNEL_CACHE), printing each kernel's registers/spills/smem; no timing." };
        var gpu = new Command("gpu", "FastAttention's CUDA kernels timed with CUDA events (warm-ups, median of N) on the shapes of the PyTorch peers " +
                                     "(perf/peers/torch_gpu_*.py): device copy bandwidth, forward tuned and plain, block-sparse vs dense, the multi-head module vs its parts, " +
                                     "paged decode and KV append bandwidth, softmax. " +
                                     "Without a CUDA device: one 'no CUDA device' line and exit 0.")
        {
            gpuQuick, gpuJson, gpuOnly, gpuProbe, gpuWarm,
        };
        gpu.Validators.Add(r =>
        {
            if (r.GetValue(gpuWarm) && r.GetValue(gpuProbe)) r.AddError("--warm and --probe cannot be combined.");
        });
        gpu.SetAction(parse => Guard(console, () =>
        {
            var sections = parse.GetValue(gpuOnly) is { } list ? SplitList(list).ToHashSet() : Gpu.GpuCommand.Sections.ToHashSet();
            return Gpu.GpuCommand.Run(console, parse.GetValue(gpuQuick), parse.GetValue(gpuProbe), parse.GetValue(gpuJson), sections, args, parse.GetValue(gpuWarm));
        }));
        root.Add(gpu);

        // ---- maps
        var text = new Option<string>("--text") { Description = "Text to run all-MiniLM-L6-v2 on (cut to 256 tokens).", Required = true };
        var layer = new Option<int>("--layer") { Description = "Layer to draw, 0..5.", HelpName = "N", DefaultValueFactory = _ => 0 };
        layer.Validators.Add(r =>
        {
            int value = r.GetValueOrDefault<int>();
            if (value < 0 || value > 5) r.AddError($"--layer must be in 0..5 (all-MiniLM-L6-v2 has 6 layers), got {value}.");
        });
        var head = new Option<int>("--head") { Description = "Head for the causal vs bidirectional picture, 0..11; -1 = the layer's most focused head.", HelpName = "H", DefaultValueFactory = _ => -1 };
        head.Validators.Add(r =>
        {
            int value = r.GetValueOrDefault<int>();
            if (value < -1 || value > 11) r.AddError($"--head must be -1 or in 0..11, got {value}.");
        });
        var outDir = new Option<string>("--out") { Description = "Output directory (created): PNGs, stats.json, stats.csv, report.html.", HelpName = "DIR", Required = true };
        var maps = new Command("maps", "Attention maps and per-head statistics of a real model (all-MiniLM-L6-v2 run on FastAttention): " +
                                       "heatmaps with token labels, all heads of a layer, causal vs bidirectional, statistics charts, an HTML report.")
        {
            text, layer, head, outDir,
        };
        maps.SetAction(parse => Guard(console, () =>
        {
            var result = FastAttention.Analysis.MapsCommand.Run(parse.GetValue(text)!, parse.GetValue(layer), parse.GetValue(outDir)!, parse.GetValue(head));
            foreach (string file in result.Pictures.Append(result.StatisticsJson).Append(result.StatisticsCsv).Append(result.Report))
            {
                console.Out.WriteLine(file);
            }
            return ExitCodes.Ok;
        }));
        root.Add(maps);
        return root;
    }

    /// <summary>The options <c>bench</c> and <c>compare</c> share.</summary>
    private sealed class CommonOptions
    {
        public readonly Option<bool> Quick = new("--quick") { Description = "A short run (about a minute for bench): fewer shapes and repetitions." };
        public readonly Option<bool> Smoke = new("--smoke") { Description = "Tiny shapes, three timed calls each: checks that everything runs (seconds); the numbers mean nothing." };
        public readonly Option<int> Threads = new("--threads") { Description = "Worker threads for every implementation (default: all logical cores).", HelpName = "N", DefaultValueFactory = _ => Environment.ProcessorCount };
        public readonly Option<string> Backend = new("--backend") { Description = "auto (CUDA rows when usable), cpu, or cuda. An unusable backend is reported and skipped; the CPU rows still run.", HelpName = "NAME", DefaultValueFactory = _ => "auto" };
        public readonly Option<string?> Json = new("--json") { Description = "Also write the results as JSON to FILE (schema in perf/README.md).", HelpName = "FILE" };
        public readonly Option<string?> Csv = new("--csv") { Description = "Also write the result rows as CSV to FILE (same fields as the JSON rows).", HelpName = "FILE" };
        public readonly Option<string?> Out = new("--out") { Description = "Also write the markdown report to FILE.", HelpName = "FILE" };
        public readonly Option<string?> Seq = new("--seq") { Description = "Sequence lengths (S = Sq = Sk), comma-separated, replacing the defaults of the dense, memory and block-sparse sections and of compare's prefill shapes (ignored by --smoke runs of the block-sparse section).", HelpName = "LIST" };
        public readonly Option<string?> HeadDim = new("--head-dim") { Description = "Head dimensions, comma-separated (1..512), replacing the defaults of the dense section and of compare's prefill shapes.", HelpName = "LIST" };

        public CommonOptions(Command command)
        {
            Threads.Validators.Add(r =>
            {
                // A value that is not a number already has its own parse error; only range-check numbers.
                if (r.Tokens.Count == 1 && int.TryParse(r.Tokens[0].Value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) && n < 1)
                {
                    r.AddError($"--threads must be at least 1, got {n}.");
                }
            });
            Backend.AcceptOnlyFromAmong(Backends);
            Seq.Validators.Add(r => ValidateInts(r, 1, 1 << 17));
            HeadDim.Validators.Add(r => ValidateInts(r, 1, 512));
            foreach (Option o in new Option[] { Quick, Smoke, Threads, Backend, Json, Csv, Out, Seq, HeadDim }) command.Add(o);
        }

        public RunOptions Read(ParseResult parse) => new(
            parse.GetValue(Smoke) ? RunScale.Smoke : parse.GetValue(Quick) ? RunScale.Quick : RunScale.Full,
            parse.GetValue(Threads),
            parse.GetValue(Backend) ?? "auto",
            parse.GetValue(Json),
            parse.GetValue(Csv),
            parse.GetValue(Out),
            parse.GetValue(Seq) is { } s ? ParseInts(s) : null,
            parse.GetValue(HeadDim) is { } d ? ParseInts(d) : null);
    }

    private static void ValidateScale(CommandResult r, CommonOptions c, Option<bool>? full)
    {
        int given = (r.GetValue(c.Quick) ? 1 : 0) + (r.GetValue(c.Smoke) ? 1 : 0) + (full is not null && r.GetValue(full) ? 1 : 0);
        if (given > 1) r.AddError("--quick, --smoke and --full are mutually exclusive.");
    }

    private static void ValidateSet(OptionResult r, IReadOnlyCollection<string> allowed)
    {
        string name = r.Option.Name;
        string? text = r.GetValueOrDefault<string?>();
        var items = text is null ? [] : SplitList(text);
        if (items.Count == 0)
        {
            r.AddError($"{name} needs at least one of: {string.Join(", ", allowed)}.");
            return;
        }
        foreach (string item in items)
        {
            if (!allowed.Contains(item)) r.AddError($"{name}: unknown value '{item}'; expected {string.Join(", ", allowed)}.");
        }
    }

    private static void ValidateInts(OptionResult r, int min, int max)
    {
        string name = r.Option.Name;
        string text = r.GetValueOrDefault<string?>() ?? "";
        var items = SplitList(text);
        if (items.Count == 0) r.AddError($"{name} needs a comma-separated list of whole numbers.");
        foreach (string item in items)
        {
            if (!int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out int v) || v < min || v > max)
            {
                r.AddError($"{name}: '{item}' is not a whole number in [{min}, {max}].");
            }
        }
    }

    public static List<string> SplitList(string text) =>
        text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();

    public static List<int> ParseInts(string text) => SplitList(text).Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToList();

    /// <summary>Runs a command body; turns I/O failures into a message and exit code 1.</summary>
    private static int Guard(CliConsole console, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            console.Error.WriteLine($"error: {e.Message}");
            console.Error.Flush();
            return ExitCodes.Failed;
        }
    }

    private static int RunInfo(CliConsole console, string? jsonFile, string[] args)
    {
        var report = InfoReport.Gather();
        foreach (var t in report.Tables()) console.Write(t);
        if (jsonFile is not null)
        {
            RunSession.WriteFile(jsonFile, report.Json(CommandLine(args)));
            console.Error.WriteLine($"[bench] wrote {jsonFile}");
        }
        return ExitCodes.Ok;
    }

    /// <summary>The command as a user would type it to reproduce the run.</summary>
    public static string CommandLine(string[] args) =>
        "dotnet run -c Release --project perf/FastAttention.Bench" + (args.Length > 0 ? " -- " + string.Join(' ', args.Select(Quote)) : "");

    private static string Quote(string arg) =>
        arg.Length > 0 && arg.All(ch => char.IsAsciiLetterOrDigit(ch) || "-_./=:+,".Contains(ch)) ? arg : "'" + arg.Replace("'", "'\\''") + "'";
}
