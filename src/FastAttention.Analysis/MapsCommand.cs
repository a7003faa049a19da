// The `maps` command: attention maps, statistics and an HTML report for one text.
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using FastAttention.Analysis.Pictures;
using FastAttention.Analysis.Statistics;

namespace FastAttention.Analysis;

/// <summary>Files written by <see cref="MapsCommand.Run"/>.</summary>
/// <param name="Directory">Output directory.</param>
/// <param name="Pictures">PNG files (full paths).</param>
/// <param name="StatisticsJson">Statistics as JSON.</param>
/// <param name="StatisticsCsv">Statistics as CSV.</param>
/// <param name="Report">The HTML report.</param>
/// <param name="Run">The analysed run.</param>
public sealed record MapsResult(string Directory, IReadOnlyList<string> Pictures, string StatisticsJson, string StatisticsCsv, string Report, AttentionRun Run);

/// <summary>
/// <c>maps --text "..." --layer N --out dir [--head H]</c>: runs all-MiniLM-L6-v2 on the text and writes, for layer N, a heatmap
/// with token labels per head, the grid of all heads, the causal vs bidirectional comparison of one head, the layer's
/// statistics chart, a layers × heads chart of the whole model, every head's statistics (both modes) as JSON and CSV, and
/// <c>report.html</c> that shows pictures and tables side by side. The benchmark CLI is meant to call <see cref="Run"/>.
/// </summary>
public static class MapsCommand
{
    /// <summary>Writes the maps, statistics and report; returns what was written.</summary>
    /// <param name="text">Input text (cut to 256 tokens).</param>
    /// <param name="layer">Layer to draw (0-based).</param>
    /// <param name="outDir">Output directory (created).</param>
    /// <param name="head">Head for the causal comparison; -1 = the layer's head with the lowest normalised entropy.</param>
    /// <param name="model">Model; null = <see cref="MiniLmModel.Shared"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="layer"/> or <paramref name="head"/> is out of range.</exception>
    public static MapsResult Run(string text, int layer, string outDir, int head = -1, MiniLmModel? model = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentException.ThrowIfNullOrEmpty(outDir);
        model ??= MiniLmModel.Shared;
        int layers = model.Weights.Layers.Count;
        if (layer < 0 || layer >= layers) throw new ArgumentOutOfRangeException(nameof(layer), layer, $"the model has layers 0..{layers - 1}.");
        if (head < -1 || head >= MiniLmModel.Heads) throw new ArgumentOutOfRangeException(nameof(head), head, $"heads are 0..{MiniLmModel.Heads - 1} (or -1 to choose).");
        Directory.CreateDirectory(outDir);
        var run = model.Analyze(text);
        int n = run.Length;
        var stats = run.Statistics[layer];
        if (head == -1) head = stats.MinBy(s => s.NormalizedEntropy)!.Head;

        var pictures = new List<string>();
        string P(string name)
        {
            string path = Path.Combine(outDir, name);
            pictures.Add(path);
            return path;
        }
        for (int h = 0; h < MiniLmModel.Heads; h++)
        {
            var s = stats[h];
            AttentionPictures.Heatmap(P($"layer{layer}-head{h}.png"), run.Map(layer, h), n, run.Tokens,
                $"Layer {layer}, head {h}: {AttentionPictures.Short(s.Kind)} (H/ln n = {s.NormalizedEntropy:F2}, distance {s.MeanDistance:F1})");
        }
        AttentionPictures.HeadGrid(P($"layer{layer}-heads.png"), [.. Enumerable.Range(0, MiniLmModel.Heads).Select(h => run.Map(layer, h))], n, n,
            [.. stats.Select(s => $"h{s.Head} {AttentionPictures.Short(s.Kind)}")], $"Layer {layer}: all {MiniLmModel.Heads} heads ({n} tokens)");
        AttentionPictures.CausalComparison(P($"layer{layer}-head{head}-causal.png"), run.Map(layer, head), run.Map(layer, head, causal: true), n, n,
            $"Layer {layer}, head {head}: bidirectional (as trained) vs causal mask (same weights)");
        AttentionPictures.LayerStatisticsChart(P($"layer{layer}-stats.png"), stats, $"Layer {layer}: statistics per head");
        AttentionPictures.ModelStatisticsChart(P("model-entropy.png"), run.Statistics, s => s.NormalizedEntropy,
            "Normalised entropy per layer and head (label = head kind)");

        string json = Path.Combine(outDir, "stats.json");
        string csv = Path.Combine(outDir, "stats.csv");
        WriteJson(json, run);
        WriteCsv(csv, run);
        string report = Path.Combine(outDir, "report.html");
        File.WriteAllText(report, Html(run, layer, head, pictures.Select(Path.GetFileName).ToList()!));
        return new MapsResult(outDir, pictures, json, csv, report, run);
    }

    private static IEnumerable<(string Mode, HeadStatistics Stats)> All(AttentionRun run) =>
        run.Statistics.SelectMany(l => l.Select(s => ("bidirectional", s))).Concat(run.CausalStatistics.SelectMany(l => l.Select(s => ("causal", s))));

    private static void WriteJson(string path, AttentionRun run)
    {
        var document = new
        {
            model = "all-MiniLM-L6-v2",
            text = run.Text,
            tokens = run.Tokens,
            ids = run.Ids,
            thresholds = new
            {
                sparsity = HeadStatistics.DefaultThreshold,
                special = HeadStatistics.SpecialThreshold,
                previous = HeadStatistics.PreviousThreshold,
                positional = HeadStatistics.PositionalThreshold,
                broad = HeadStatistics.BroadThreshold,
            },
            heads = All(run).Select(x => new
            {
                mode = x.Mode, layer = x.Stats.Layer, head = x.Stats.Head, kind = x.Stats.Kind.ToString(),
                entropy = x.Stats.Entropy, normalizedEntropy = x.Stats.NormalizedEntropy, effectiveKeys = x.Stats.EffectiveKeys,
                meanDistance = x.Stats.MeanDistance, sparsity = x.Stats.Sparsity, specialFocus = x.Stats.SpecialFocus,
                previousFocus = x.Stats.PreviousFocus, selfFocus = x.Stats.SelfFocus, nextFocus = x.Stats.NextFocus,
            }),
        };
        File.WriteAllText(path, JsonSerializer.Serialize(document, new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>CSV header of the statistics file.</summary>
    public const string CsvHeader = "mode,layer,head,kind,entropy,normalized_entropy,effective_keys,mean_distance,sparsity,special_focus,previous_focus,self_focus,next_focus";

    private static void WriteCsv(string path, AttentionRun run)
    {
        var sb = new StringBuilder(CsvHeader).Append('\n');
        foreach (var (mode, s) in All(run))
        {
            sb.Append(CultureInfo.InvariantCulture, $"{mode},{s.Layer},{s.Head},{s.Kind},{s.Entropy:G6},{s.NormalizedEntropy:G6},{s.EffectiveKeys:G6},{s.MeanDistance:G6},{s.Sparsity:G6},{s.SpecialFocus:G6},{s.PreviousFocus:G6},{s.SelfFocus:G6},{s.NextFocus:G6}\n");
        }
        File.WriteAllText(path, sb.ToString());
    }

    private static string Html(AttentionRun run, int layer, int head, IReadOnlyList<string> pictures)
    {
        static string E(string s) => WebUtility.HtmlEncode(s);
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Attention maps: all-MiniLM-L6-v2</title>\n<style>")
          .Append("body{font-family:sans-serif;margin:1.5em} .row{display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap} ")
          .Append("table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} ")
          .Append("img{max-width:100%} .thumbs img{width:300px}</style></head><body>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<h1>Attention maps: all-MiniLM-L6-v2, layer {layer}</h1>\n<p>Text: <q>{E(run.Text)}</q></p>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<p>{run.Length} tokens: <code>{E(string.Join(" ", run.Tokens))}</code></p>\n");
        sb.Append("<p>Rules: special-token head if its mean weight on [CLS]/[SEP] &ge; 0.5; else previous-token if its mean weight on the previous token &ge; 0.5; ")
          .Append("else positional if its weight within &plusmn;1 position &ge; 0.5; else broad if its normalised entropy (H / ln keys) &ge; 0.75; else mixed. ")
          .Append("Sparsity = share of weights below 0.01; effective keys = exp(entropy).</p>\n");
        string Img(string name) => $"<a href=\"{E(name)}\"><img src=\"{E(name)}\" alt=\"{E(name)}\"></a>";
        sb.Append("<h2>All heads</h2><div class=\"row\"><div style=\"flex:1 1 600px\">").Append(Img($"layer{layer}-heads.png")).Append("</div><div>")
          .Append(Table(run.Statistics[layer])).Append("</div></div>\n");
        sb.Append("<h2>Statistics</h2><div class=\"row\"><div style=\"flex:1 1 600px\">").Append(Img($"layer{layer}-stats.png")).Append("</div><div style=\"flex:1 1 500px\">")
          .Append(Img("model-entropy.png")).Append("</div></div>\n");
        sb.Append(CultureInfo.InvariantCulture, $"<h2>Causal vs bidirectional (head {head})</h2><div class=\"row\"><div style=\"flex:1 1 600px\">")
          .Append(Img($"layer{layer}-head{head}-causal.png")).Append("</div><div><p>Causal statistics (same weights, causal mask):</p>")
          .Append(Table(run.CausalStatistics[layer])).Append("</div></div>\n");
        sb.Append("<h2>Each head</h2><div class=\"row thumbs\">");
        foreach (var name in pictures.Where(p => p.StartsWith($"layer{layer}-head", StringComparison.Ordinal) && !p.EndsWith("-causal.png", StringComparison.Ordinal) && p != $"layer{layer}-heads.png"))
        {
            sb.Append(Img(name));
        }
        sb.Append("</div>\n<p>Data: <a href=\"stats.json\">stats.json</a>, <a href=\"stats.csv\">stats.csv</a> (every layer and head, both modes).</p>\n");
        // Every picture is linked (the loops above cover them; this list makes sure and serves as an index).
        sb.Append("<h2>Files</h2><ul>");
        foreach (var name in pictures) sb.Append(CultureInfo.InvariantCulture, $"<li><a href=\"{E(name)}\">{E(name)}</a></li>");
        sb.Append("</ul></body></html>\n");
        return sb.ToString();
    }

    private static string Table(IReadOnlyList<HeadStatistics> heads)
    {
        var sb = new StringBuilder("<table><tr><th>head</th><th>kind</th><th>entropy</th><th>H/ln n</th><th>eff. keys</th><th>distance</th><th>sparsity</th><th>special</th><th>prev</th><th>self</th><th>next</th></tr>");
        foreach (var s in heads)
        {
            sb.Append(CultureInfo.InvariantCulture,
                $"<tr><td>{s.Head}</td><td>{AttentionPictures.Short(s.Kind)}</td><td>{s.Entropy:F2}</td><td>{s.NormalizedEntropy:F2}</td><td>{s.EffectiveKeys:F1}</td><td>{s.MeanDistance:F2}</td><td>{s.Sparsity:F2}</td><td>{s.SpecialFocus:F2}</td><td>{s.PreviousFocus:F2}</td><td>{s.SelfFocus:F2}</td><td>{s.NextFocus:F2}</td></tr>");
        }
        return sb.Append("</table>").ToString();
    }
}
