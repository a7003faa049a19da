// The machine-readable results: one flat row type shared by every section, written as JSON and CSV with a fixed schema.
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FastAttention.Bench.Output;

/// <summary>
/// One measured (or skipped) row. Every row carries every field, null where it does not apply, so the
/// JSON and CSV columns never change between sections or runs. Field meanings are documented in
/// perf/README.md ("Results schema"); <see cref="Fields"/> is the column order.
/// </summary>
internal sealed record ResultRow
{
    /// <summary>peak, dense, sparse, sgemm, decode, caching, memory, compare.</summary>
    public required string Section { get; init; }
    /// <summary>A short human-readable case name, unique within a section and implementation.</summary>
    public required string Case { get; init; }
    /// <summary>fastattention, onnxruntime, naive, torch-sdpa, plain-read, recompute, machine.</summary>
    public required string Impl { get; init; }
    /// <summary>cpu, or the GPU ("cuda:0 NVIDIA H100 ...").</summary>
    public string Device { get; init; } = "cpu";
    public string? Dtype { get; init; }
    public int? Batch { get; init; }
    public int? SeqQ { get; init; }
    public int? SeqK { get; init; }
    public int? Heads { get; init; }
    public int? KvHeads { get; init; }
    public int? HeadDim { get; init; }
    public bool? Causal { get; init; }
    /// <summary>Section-specific parameters (sparse pattern, sgemm layout, cache kind, ONNX operator, cold/warm).</summary>
    public string? Params { get; init; }
    public double? Density { get; init; }
    public double? MedianMs { get; init; }
    public double? MinMs { get; init; }
    public double? MaxMs { get; init; }
    public int? Runs { get; init; }
    /// <summary>(max − min) / (2 · median).</summary>
    public double? Spread { get; init; }
    /// <summary>FLOPs per call (FlashAttention's count for attention, halved for causal; 2·M·N·K for sgemm).</summary>
    public double? Flops { get; init; }
    public double? Gflops { get; init; }
    /// <summary>Fraction (0..1) of the best measured fp32 FMA peak.</summary>
    public double? PctFmaPeak { get; init; }
    /// <summary>Bytes per call behind <see cref="Gbs"/> (K+V for decode, B for sgemm), or the theoretical score-matrix bytes in memory rows.</summary>
    public double? Bytes { get; init; }
    public double? Gbs { get; init; }
    /// <summary>Fraction (0..1) of the measured DRAM read bandwidth.</summary>
    public double? PctReadPeak { get; init; }
    /// <summary>sparse: dense ÷ this; caching: recompute ÷ cached; compare: peer ÷ FastAttention time (FastAttention's speedup over that peer).</summary>
    public double? Speedup { get; init; }
    /// <summary>memory rows: bytes allocated by the call, measured with GC.GetTotalAllocatedBytes(precise: true).</summary>
    public long? AllocBytes { get; init; }
    /// <summary>compare rows: max |output − FastAttention's output|.</summary>
    public double? MaxAbsDiff { get; init; }
    public string? Note { get; init; }

    /// <summary>The column order of CSV and the property order of every JSON row (the stable schema).</summary>
    public static readonly string[] Fields =
    [
        "section", "case", "impl", "device", "dtype", "batch", "seq_q", "seq_k", "heads", "kv_heads", "head_dim", "causal",
        "params", "density", "median_ms", "min_ms", "max_ms", "runs", "spread", "flops", "gflops", "pct_fma_peak", "bytes",
        "gbs", "pct_read_peak", "speedup", "alloc_bytes", "max_abs_diff", "note",
    ];

    /// <summary>The values in <see cref="Fields"/> order.</summary>
    public object?[] Values() =>
    [
        Section, Case, Impl, Device, Dtype, Batch, SeqQ, SeqK, Heads, KvHeads, HeadDim, Causal,
        Params, Density, MedianMs, MinMs, MaxMs, Runs, Spread, Flops, Gflops, PctFmaPeak, Bytes,
        Gbs, PctReadPeak, Speedup, AllocBytes, MaxAbsDiff, Note,
    ];

    /// <summary>Timing fields from a <see cref="Measurement"/>.</summary>
    public ResultRow WithTime(Measurement m) => this with
    {
        MedianMs = m.MedianMs, MinMs = m.MinMs, MaxMs = m.MaxMs, Runs = m.Runs, Spread = m.Spread,
    };

    /// <summary>Reads a row written by <see cref="ResultsFile.Json"/> (unknown fields are ignored, missing ones are null).</summary>
    /// <exception cref="FormatException">section, case or impl is missing, or a field has the wrong type.</exception>
    public static ResultRow FromJson(JsonObject o)
    {
        string Req(string name) => o[name]?.GetValue<string>() ?? throw new FormatException($"a row has no '{name}'.");
        T? Get<T>(string name) where T : struct
        {
            try
            {
                return o[name] is JsonValue v ? v.GetValue<T>() : null;
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new FormatException($"row field '{name}' is not a {typeof(T).Name}: {o[name]?.ToJsonString()}");
            }
        }
        string? Str(string name) => o[name] is JsonValue v ? v.ToString() : null;
        return new ResultRow
        {
            Section = Req("section"), Case = Req("case"), Impl = Req("impl"), Device = Str("device") ?? "cpu", Dtype = Str("dtype"),
            Batch = Get<int>("batch"), SeqQ = Get<int>("seq_q"), SeqK = Get<int>("seq_k"), Heads = Get<int>("heads"),
            KvHeads = Get<int>("kv_heads"), HeadDim = Get<int>("head_dim"), Causal = Get<bool>("causal"), Params = Str("params"),
            Density = Get<double>("density"), MedianMs = Get<double>("median_ms"), MinMs = Get<double>("min_ms"), MaxMs = Get<double>("max_ms"),
            Runs = Get<int>("runs"), Spread = Get<double>("spread"), Flops = Get<double>("flops"), Gflops = Get<double>("gflops"),
            PctFmaPeak = Get<double>("pct_fma_peak"), Bytes = Get<double>("bytes"), Gbs = Get<double>("gbs"),
            PctReadPeak = Get<double>("pct_read_peak"), Speedup = Get<double>("speedup"), AllocBytes = Get<long>("alloc_bytes"),
            MaxAbsDiff = Get<double>("max_abs_diff"), Note = Str("note"),
        };
    }
}

/// <summary>What the JSON file says about the run besides its rows.</summary>
internal sealed record RunMetadata(string Command, string Tool, DateTimeOffset Date, string Mode, int Threads, MachineInfo Machine,
    PeakResult? Peak, IReadOnlyList<string> Messages, LoadSample LoadStart, LoadSample? LoadEnd, double? OtherCpuFraction, double? WallSeconds);

/// <summary>Writes results as JSON (metadata + rows) and CSV (rows only).</summary>
internal static class ResultsFile
{
    /// <summary>The schema identifier in every JSON file; bumped only when a field changes meaning or goes away.</summary>
    public const string Schema = "fastattention-bench/1";

    /// <summary>Top-level JSON fields, in order.</summary>
    public static readonly string[] TopLevelFields = ["schema", "tool", "command", "date_utc", "mode", "threads", "machine", "peak", "load", "messages", "rows"];

    /// <summary>Fields of "machine", in order.</summary>
    public static readonly string[] MachineFields = ["cpu", "logical_cores", "os", "runtime", "avx2", "fma", "avx512f", "vector512_accelerated", "optimized_build"];

    /// <summary>Fields of "peak" (null when the run measured none), in order.</summary>
    public static readonly string[] PeakFields = ["fma_vector256_gflops", "fma_vector512_gflops", "dram_read_gbs", "threads"];

    /// <summary>Fields of "load", in order.</summary>
    public static readonly string[] LoadFields = ["loadavg_start", "loadavg_end", "other_cpu_fraction", "wall_s"];

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string Json(RunMetadata meta, IReadOnlyList<ResultRow> rows)
    {
        var m = meta.Machine;
        var root = new JsonObject
        {
            ["schema"] = Schema,
            ["tool"] = meta.Tool,
            ["command"] = meta.Command,
            ["date_utc"] = meta.Date.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture),
            ["mode"] = meta.Mode,
            ["threads"] = meta.Threads,
            ["machine"] = new JsonObject
            {
                ["cpu"] = m.CpuModel, ["logical_cores"] = m.LogicalCores, ["os"] = m.Os, ["runtime"] = m.Runtime,
                ["avx2"] = m.HasAvx2, ["fma"] = m.HasFma, ["avx512f"] = m.HasAvx512F,
                ["vector512_accelerated"] = m.Vector512Accelerated, ["optimized_build"] = m.OptimizedBuild,
            },
            ["peak"] = meta.Peak is { } p
                ? new JsonObject
                {
                    ["fma_vector256_gflops"] = Num(p.Avx2GFlops), ["fma_vector512_gflops"] = Num(p.Avx512GFlops),
                    ["dram_read_gbs"] = Num(p.DramGBs), ["threads"] = p.Threads,
                }
                : null,
            ["load"] = new JsonObject
            {
                ["loadavg_start"] = LoadArray(meta.LoadStart),
                ["loadavg_end"] = meta.LoadEnd is { } end ? LoadArray(end) : null,
                ["other_cpu_fraction"] = Num(meta.OtherCpuFraction),
                ["wall_s"] = Num(meta.WallSeconds),
            },
            ["messages"] = new JsonArray(meta.Messages.Select(x => (JsonNode?)JsonValue.Create(x)).ToArray()),
            ["rows"] = new JsonArray(rows.Select(r => (JsonNode?)RowJson(r)).ToArray()),
        };
        return root.ToJsonString(Indented) + "\n";
    }

    public static JsonObject RowJson(ResultRow r)
    {
        var o = new JsonObject();
        object?[] values = r.Values();
        for (int i = 0; i < ResultRow.Fields.Length; i++)
        {
            o[ResultRow.Fields[i]] = values[i] switch
            {
                null => null,
                string s => JsonValue.Create(s),
                bool b => JsonValue.Create(b),
                int n => JsonValue.Create(n),
                long n => JsonValue.Create(n),
                double d => Num(d),
                var other => throw new InvalidOperationException($"unexpected field type {other.GetType()}"),
            };
        }
        return o;
    }

    public static string Csv(IReadOnlyList<ResultRow> rows)
    {
        var sb = new StringBuilder();
        sb.Append(string.Join(',', ResultRow.Fields)).Append('\n');
        foreach (var r in rows)
        {
            sb.Append(string.Join(',', r.Values().Select(CsvCell))).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>Rows of a results JSON file (ours, or perf/peers/torch_sdpa.py's).</summary>
    /// <exception cref="FormatException">Not JSON, another schema, or a malformed row.</exception>
    public static (string? Tool, List<ResultRow> Rows) ReadRows(string json)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(json);
        }
        catch (JsonException e)
        {
            throw new FormatException($"not valid JSON: {e.Message}");
        }
        if (root is not JsonObject o) throw new FormatException("the top level is not a JSON object.");
        string? schema = o["schema"] is JsonValue s ? s.ToString() : null;
        if (schema != Schema) throw new FormatException($"schema is '{schema ?? "(missing)"}', expected '{Schema}'.");
        if (o["rows"] is not JsonArray rows) throw new FormatException("no 'rows' array.");
        var list = new List<ResultRow>();
        foreach (var node in rows)
        {
            list.Add(ResultRow.FromJson(node as JsonObject ?? throw new FormatException("a row is not an object.")));
        }
        return (o["tool"] is JsonValue t ? t.ToString() : null, list);
    }

    private static JsonArray LoadArray(LoadSample l) => new(Num(l.One), Num(l.Five), Num(l.Fifteen));

    private static JsonValue? Num(double? d) => d is { } v && double.IsFinite(v) ? JsonValue.Create(v) : null;

    private static string CsvCell(object? v)
    {
        string s = v switch
        {
            null => "",
            bool b => b ? "true" : "false",
            double d => double.IsFinite(d) ? d.ToString("R", CultureInfo.InvariantCulture) : "",
            IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
            _ => v.ToString() ?? "",
        };
        return s.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;
    }
}
