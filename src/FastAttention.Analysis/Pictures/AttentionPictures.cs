// Headless PNG pictures of attention maps and head statistics (ScottPlot 5 on SkiaSharp).
using FastAttention.Analysis.Statistics;
using ScottPlot;

namespace FastAttention.Analysis.Pictures;

/// <summary>
/// PNG pictures of attention. Every heatmap draws query rows top to bottom and key columns left to right (row i, column j =
/// the weight query i gives key j), colour scale 0…1 (Viridis). Text needs a font on the machine (Debian: <c>fonts-dejavu-core</c>);
/// without one ScottPlot draws the pictures with the labels silently missing.
/// </summary>
public static class AttentionPictures
{
    private static readonly IColormap Colormap = new ScottPlot.Colormaps.Viridis();

    /// <summary>Copies the first n × n weights of a <c>[rows, stride]</c> map into a ScottPlot grid (row 0 drawn at the top).</summary>
    private static double[,] Grid(ReadOnlySpan<float> map, int stride, int n)
    {
        var grid = new double[n, n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++) grid[i, j] = map[i * stride + j];
        }
        return grid;
    }

    private static void AddMap(Plot plot, double[,] grid, double left, double top, double size)
    {
        var heatmap = plot.Add.Heatmap(grid);
        heatmap.Colormap = Colormap;
        heatmap.ManualRange = new ScottPlot.Range(0, 1);
        heatmap.Rectangle = new CoordinateRect(left, left + size, top - size, top);
    }

    /// <summary>One head's map with the tokens as axis labels, and a colour bar. Size grows with the token count.</summary>
    /// <param name="path">PNG file to write.</param>
    /// <param name="map">Weights <c>[rows, stride]</c> (rows = queries).</param>
    /// <param name="stride">Elements between rows.</param>
    /// <param name="tokens">Token labels; their count n is the map size drawn.</param>
    /// <param name="title">Title.</param>
    public static void Heatmap(string path, ReadOnlySpan<float> map, int stride, IReadOnlyList<string> tokens, string title)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        int n = tokens.Count;
        var plot = new Plot();
        var heatmap = plot.Add.Heatmap(Grid(map, stride, n));
        heatmap.Colormap = Colormap;
        heatmap.ManualRange = new ScottPlot.Range(0, 1);
        heatmap.Rectangle = new CoordinateRect(-0.5, n - 0.5, -0.5, n - 0.5);
        plot.Add.ColorBar(heatmap);
        // Row i is drawn at y = n-1-i (top row = first query).
        double[] x = [.. Enumerable.Range(0, n).Select(i => (double)i)];
        double[] y = [.. Enumerable.Range(0, n).Select(i => (double)(n - 1 - i))];
        string[] labels = [.. tokens];
        plot.Axes.Bottom.SetTicks(x, labels);
        plot.Axes.Left.SetTicks(y, labels);
        plot.Axes.Bottom.TickLabelStyle.Rotation = 90;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.Label.Text = "key";
        plot.Axes.Left.Label.Text = "query";
        plot.Axes.SetLimits(-0.5, n - 0.5, -0.5, n - 0.5);
        plot.HideGrid();
        plot.Title(title);
        int size = Math.Clamp(300 + 14 * n, 500, 2400);
        plot.SavePng(path, size + 120, size);
    }

    /// <summary>All heads of a layer as a grid of maps (4 per row), each titled with its head index and kind.</summary>
    /// <param name="path">PNG file to write.</param>
    /// <param name="maps">Per head, its weights <c>[rows, stride]</c>.</param>
    /// <param name="stride">Elements between rows.</param>
    /// <param name="n">Tokens drawn.</param>
    /// <param name="captions">Per head, a caption.</param>
    /// <param name="title">Title.</param>
    public static void HeadGrid(string path, IReadOnlyList<float[]> maps, int stride, int n, IReadOnlyList<string> captions, string title)
    {
        ArgumentNullException.ThrowIfNull(maps);
        ArgumentNullException.ThrowIfNull(captions);
        const int columns = 4;
        int rows = (maps.Count + columns - 1) / columns;
        const double gap = 0.15, size = 1;
        var plot = new Plot();
        for (int h = 0; h < maps.Count; h++)
        {
            double left = h % columns * (size + gap), top = -(h / columns) * (size + gap + 0.12);
            AddMap(plot, Grid(maps[h], stride, n), left, top, size);
            var text = plot.Add.Text(captions[h], left, top + 0.01);
            text.LabelFontSize = 13;
            text.LabelAlignment = Alignment.LowerLeft;
        }
        double width = columns * (size + gap), height = rows * (size + gap + 0.12);
        plot.Axes.SetLimits(-gap, width, -height + 0.05, 0.2);
        plot.Layout.Frameless();
        plot.HideGrid();
        plot.Axes.Frameless();
        var titleText = plot.Add.Text(title, -gap / 2, 0.19);
        titleText.LabelFontSize = 18;
        titleText.LabelAlignment = Alignment.UpperLeft;
        plot.SavePng(path, 1400, (int)(1400 * (height + 0.15) / (width + gap)));
    }

    /// <summary>The same head bidirectional (as trained) and causal (the same weights with a causal mask), side by side.</summary>
    public static void CausalComparison(string path, ReadOnlySpan<float> bidirectional, ReadOnlySpan<float> causal, int stride, int n, string title)
    {
        var plot = new Plot();
        const double size = 1, gap = 0.15;
        AddMap(plot, Grid(bidirectional, stride, n), 0, 0, size);
        AddMap(plot, Grid(causal, stride, n), size + gap, 0, size);
        var a = plot.Add.Text("bidirectional", 0, 0.01);
        a.LabelFontSize = 16;
        a.LabelAlignment = Alignment.LowerLeft;
        var b = plot.Add.Text("causal", size + gap, 0.01);
        b.LabelFontSize = 16;
        b.LabelAlignment = Alignment.LowerLeft;
        var t = plot.Add.Text(title, 0, 0.14);
        t.LabelFontSize = 18;
        t.LabelAlignment = Alignment.LowerLeft;
        plot.Axes.SetLimits(-0.05, 2 * size + gap + 0.05, -size - 0.05, 0.25);
        plot.Layout.Frameless();
        plot.Axes.Frameless();
        plot.HideGrid();
        plot.SavePng(path, 1200, 700);
    }

    /// <summary>Bar chart of one layer's head statistics: normalised entropy, special-token, previous-token and self focus, sparsity.</summary>
    public static void LayerStatisticsChart(string path, IReadOnlyList<HeadStatistics> heads, string title)
    {
        ArgumentNullException.ThrowIfNull(heads);
        var plot = new Plot();
        (string Name, Func<HeadStatistics, double> Value)[] series =
        [
            ("normalised entropy", s => s.NormalizedEntropy),
            ("special-token focus", s => s.SpecialFocus),
            ("previous-token focus", s => s.PreviousFocus),
            ("self focus", s => s.SelfFocus),
            ("sparsity (< 0.01)", s => s.Sparsity),
        ];
        double width = 0.8 / series.Length;
        var palette = new ScottPlot.Palettes.Category10();
        for (int k = 0; k < series.Length; k++)
        {
            var bars = heads.Select((s, h) => new Bar { Position = h + (k - (series.Length - 1) / 2.0) * width, Value = series[k].Value(s), Size = width, FillColor = palette.GetColor(k) }).ToList();
            plot.Add.Bars(bars);
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = series[k].Name, FillColor = palette.GetColor(k) });
        }
        plot.Axes.Bottom.SetTicks([.. heads.Select((_, h) => (double)h)], [.. heads.Select(s => $"h{s.Head}\n{Short(s.Kind)}")]);
        plot.Axes.Left.Label.Text = "value (0-1)";
        plot.Axes.SetLimits(-0.6, heads.Count - 0.4, 0, 1.05);
        plot.ShowLegend(Alignment.UpperRight);
        plot.Title(title);
        plot.SavePng(path, 1400, 600);
    }

    /// <summary>A layers × heads heatmap of one statistic (e.g. normalised entropy), every layer of the model at a glance.</summary>
    public static void ModelStatisticsChart(string path, IReadOnlyList<IReadOnlyList<HeadStatistics>> layers, Func<HeadStatistics, double> value, string title)
    {
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(value);
        int l = layers.Count, h = layers[0].Count;
        var grid = new double[l, h];
        for (int i = 0; i < l; i++)
        {
            for (int j = 0; j < h; j++) grid[i, j] = value(layers[i][j]);
        }
        var plot = new Plot();
        var heatmap = plot.Add.Heatmap(grid);
        heatmap.Colormap = Colormap;
        heatmap.ManualRange = new ScottPlot.Range(0, 1);
        heatmap.Rectangle = new CoordinateRect(-0.5, h - 0.5, -0.5, l - 0.5);
        plot.Add.ColorBar(heatmap);
        for (int i = 0; i < l; i++)
        {
            for (int j = 0; j < h; j++)
            {
                var text = plot.Add.Text(Short(layers[i][j].Kind), j, l - 1 - i);
                text.LabelAlignment = Alignment.MiddleCenter;
                text.LabelFontColor = grid[i, j] > 0.6 ? Colors.Black : Colors.White;
                text.LabelFontSize = 12;
            }
        }
        plot.Axes.Bottom.SetTicks([.. Enumerable.Range(0, h).Select(j => (double)j)], [.. Enumerable.Range(0, h).Select(j => $"h{j}")]);
        plot.Axes.Left.SetTicks([.. Enumerable.Range(0, l).Select(i => (double)(l - 1 - i))], [.. Enumerable.Range(0, l).Select(i => $"layer {i}")]);
        plot.Axes.SetLimits(-0.5, h - 0.5, -0.5, l - 0.5);
        plot.HideGrid();
        plot.Title(title);
        plot.SavePng(path, 1200, 120 + 70 * l);
    }

    /// <summary>Short label of a head kind.</summary>
    public static string Short(HeadKind kind) => kind switch
    {
        HeadKind.SpecialToken => "special",
        HeadKind.PreviousToken => "prev",
        HeadKind.Positional => "pos",
        HeadKind.Broad => "broad",
        _ => "mixed",
    };
}
