// PNG pictures: written, valid (signature, IHDR dimensions, decodable) and non-trivial (many colours), from synthetic maps.
using FastAttention.Analysis.Pictures;
using FastAttention.Analysis.Statistics;
using SkiaSharp;

namespace FastAttention.Tests.Analysis;

[TestFixture]
[NonParallelizable] // ScottPlot/SkiaSharp rendering: one at a time keeps the CPU use modest
public sealed class PictureTests
{
    private string _dir = "";

    [OneTimeSetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("fa-pictures-").FullName;

    [OneTimeTearDown]
    public void RemoveDirectory() => Directory.Delete(_dir, recursive: true);

    internal static (int Width, int Height) CheckPng(string path, int minColours = 16)
    {
        Assert.That(File.Exists(path), Is.True, path);
        byte[] bytes = File.ReadAllBytes(path);
        Assert.That(bytes.AsSpan(0, 8).ToArray(), Is.EqualTo(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }), $"{path}: PNG signature");
        Assert.That(System.Text.Encoding.ASCII.GetString(bytes, 12, 4), Is.EqualTo("IHDR"), path);
        int width = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16));
        int height = System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20));
        using var bitmap = SKBitmap.Decode(path);
        Assert.That(bitmap, Is.Not.Null, $"{path}: decodable");
        Assert.That((bitmap.Width, bitmap.Height), Is.EqualTo((width, height)), path);
        Assert.That(width, Is.GreaterThanOrEqualTo(400), path);
        Assert.That(height, Is.GreaterThanOrEqualTo(300), path);
        var colours = new HashSet<uint>();
        for (int y = 0; y < bitmap.Height; y += 3)
        {
            for (int x = 0; x < bitmap.Width; x += 3) colours.Add((uint)bitmap.GetPixel(x, y));
        }
        Assert.That(colours, Has.Count.GreaterThanOrEqualTo(minColours), $"{path}: distinct colours (not one colour)");
        return (width, height);
    }

    private static float[] SoftMap(int n, int seed)
    {
        var random = new Random(seed);
        var map = new float[n * n];
        for (int i = 0; i < n; i++)
        {
            double sum = 0;
            var row = new double[n];
            for (int j = 0; j < n; j++) sum += row[j] = Math.Exp(3 * random.NextDouble() + (j == Math.Max(0, i - 1) ? 2 : 0));
            for (int j = 0; j < n; j++) map[i * n + j] = (float)(row[j] / sum);
        }
        return map;
    }

    [Test]
    public void LabelsRender()
    {
        // Without a font (Debian: fonts-dejavu-core, installed by .ci/run) ScottPlot silently draws no text at all.
        // (Not proven to fail on a font-less machine: hiding the fonts with an empty FONTCONFIG_FILE still rendered text.)
        var plot = new ScottPlot.Plot();
        var text = plot.Add.Text("WWW", 0, 0);
        text.LabelFontSize = 60;
        text.LabelFontColor = ScottPlot.Colors.Black;
        text.LabelAlignment = ScottPlot.Alignment.MiddleCenter;
        plot.Axes.SetLimits(-1, 1, -1, 1);
        plot.Layout.Frameless();
        plot.Axes.Frameless();
        plot.HideGrid();
        string path = Path.Combine(_dir, "text.png");
        plot.SavePng(path, 400, 300);
        using var bitmap = SKBitmap.Decode(path);
        int dark = 0;
        for (int y = 0; y < bitmap.Height; y++)
        {
            for (int x = 0; x < bitmap.Width; x++)
            {
                var c = bitmap.GetPixel(x, y);
                if (c.Red < 128 && c.Green < 128 && c.Blue < 128) dark++;
            }
        }
        Assert.That(dark, Is.GreaterThan(500), "no text drawn: is a font (fonts-dejavu-core) installed?");
    }

    [Test]
    public void SingleHeadHeatmapWithTokenLabels()
    {
        string[] tokens = ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"];
        string path = Path.Combine(_dir, "head.png");
        AttentionPictures.Heatmap(path, SoftMap(tokens.Length, 1), tokens.Length, tokens, "test head");
        CheckPng(path);
    }

    [Test]
    public void HeadGridCausalComparisonAndCharts()
    {
        const int n = 11, heads = 12;
        var maps = Enumerable.Range(0, heads).Select(h => SoftMap(n, h)).ToList();
        var causal = SoftMap(n, 99);
        for (int i = 0; i < n; i++)
        {
            for (int j = i + 1; j < n; j++) causal[i * n + j] = 0;
        }
        var stats = maps.Select((m, h) => HeadStatistics.Compute(m, n, n, head: h)).ToList();
        string grid = Path.Combine(_dir, "grid.png"), comparison = Path.Combine(_dir, "causal.png");
        string layer = Path.Combine(_dir, "stats.png"), model = Path.Combine(_dir, "model.png");
        AttentionPictures.HeadGrid(grid, maps, n, n, [.. stats.Select(s => $"h{s.Head}")], "grid");
        AttentionPictures.CausalComparison(comparison, maps[0], causal, n, n, "comparison");
        AttentionPictures.LayerStatisticsChart(layer, stats, "layer");
        AttentionPictures.ModelStatisticsChart(model, [stats, stats, stats], s => s.NormalizedEntropy, "model");
        Assert.Multiple(() =>
        {
            CheckPng(grid);
            CheckPng(comparison);
            CheckPng(layer);
            CheckPng(model);
        });
    }
}
