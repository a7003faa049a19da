// The JSON/CSV schema is stable: golden field lists (perf/README.md documents the same ones), and a JSON round trip.
using System.Text.Json.Nodes;
using FastAttention.Bench.Output;

namespace FastAttention.Bench.Tests;

[TestFixture]
public sealed class SchemaTests
{
    /// <summary>Golden list: changing it is a schema change (bump ResultsFile.Schema and perf/README.md).</summary>
    public static readonly string[] GoldenRowFields =
    [
        "section", "case", "impl", "device", "dtype", "batch", "seq_q", "seq_k", "heads", "kv_heads", "head_dim", "causal",
        "params", "density", "median_ms", "min_ms", "max_ms", "runs", "spread", "flops", "gflops", "pct_fma_peak", "bytes",
        "gbs", "pct_read_peak", "speedup", "alloc_bytes", "max_abs_diff", "note",
    ];

    [Test]
    public void RowFieldsAreTheGoldenList()
    {
        Assert.That(ResultsFile.Schema, Is.EqualTo("fastattention-bench/1"));
        Assert.That(ResultRow.Fields, Is.EqualTo(GoldenRowFields));
        Assert.That(new ResultRow { Section = "s", Case = "c", Impl = "i" }.Values(), Has.Length.EqualTo(GoldenRowFields.Length));
    }

    [Test]
    public void TopLevelFieldsAreTheGoldenList()
    {
        string json = ResultsFile.Json(Meta(), [new ResultRow { Section = "dense", Case = "c", Impl = "fastattention", MedianMs = 1.5 }]);
        var o = JsonNode.Parse(json)!.AsObject();
        Assert.That(o.Select(p => p.Key), Is.EqualTo(new[] { "schema", "tool", "command", "date_utc", "mode", "threads", "machine", "peak", "load", "messages", "rows" }));
        Assert.That(ResultsFile.TopLevelFields, Is.EqualTo(o.Select(p => p.Key)));
        Assert.That(o["machine"]!.AsObject().Select(p => p.Key),
            Is.EqualTo(new[] { "cpu", "logical_cores", "os", "runtime", "avx2", "fma", "avx512f", "vector512_accelerated", "optimized_build" }));
        Assert.That(o["peak"]!.AsObject().Select(p => p.Key), Is.EqualTo(new[] { "fma_vector256_gflops", "fma_vector512_gflops", "dram_read_gbs", "threads" }));
        Assert.That(o["load"]!.AsObject().Select(p => p.Key), Is.EqualTo(new[] { "loadavg_start", "loadavg_end", "other_cpu_fraction", "wall_s" }));
        var row = o["rows"]![0]!.AsObject();
        Assert.That(row.Select(p => p.Key), Is.EqualTo(GoldenRowFields), "every row carries every field, nulls included");
        Assert.That(row["seq_q"], Is.Null);
        Assert.That(o["peak"]!["fma_vector512_gflops"], Is.Null, "NaN is written as null");
    }

    [Test]
    public void RowsRoundTripThroughJson()
    {
        var rows = new[]
        {
            new ResultRow
            {
                Section = "compare", Case = "prefill B=1 H=8 D=64 S=512 causal", Impl = "onnxruntime", Dtype = "fp32", Batch = 1, SeqQ = 512, SeqK = 512,
                Heads = 8, KvHeads = 8, HeadDim = 64, Causal = true, Params = "com.microsoft GroupQueryAttention", MedianMs = 3.25, MinMs = 3, MaxMs = 4,
                Runs = 7, Spread = 0.15, Flops = 268435456, Gflops = 82.6, PctFmaPeak = 0.4, Bytes = 2097152, Gbs = 0.6, PctReadPeak = 0.03,
                Speedup = 1.7, AllocBytes = 12345678901, MaxAbsDiff = 1.5e-7, Note = "a, \"quoted\" note",
            },
            new ResultRow { Section = "memory", Case = "S=512", Impl = "naive", Note = "not run" },
        };
        var back = ResultsFile.ReadRows(ResultsFile.Json(Meta(), rows)).Rows;
        Assert.That(back, Is.EqualTo(rows));
    }

    [Test]
    public void CsvQuotesCellsThatNeedIt()
    {
        string csv = ResultsFile.Csv([new ResultRow { Section = "sparse", Case = "Local window ±1, stride 2", Impl = "fastattention", Causal = false, Note = "say \"hi\"" }]);
        string[] lines = csv.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines, Has.Length.EqualTo(2));
        Assert.That(lines[1], Does.StartWith("sparse,\"Local window ±1, stride 2\",fastattention,cpu,,,,,,,,false,"));
        Assert.That(lines[1], Does.EndWith(",\"say \"\"hi\"\"\""));
    }

    private static RunMetadata Meta() => new("cmd", "FastAttention.Bench", DateTimeOffset.UnixEpoch, "smoke", 2,
        new MachineInfo("cpu", 2, ".NET", "linux", true, true, true, true, true), new PeakResult(100, double.NaN, 20, 2), [],
        new LoadSample(1, 2, 3), null, null, null);
}
