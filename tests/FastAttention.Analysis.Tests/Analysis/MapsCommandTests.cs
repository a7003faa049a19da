// MapsCommand.Run on the real model: every picture written and valid, the statistics files complete, the HTML report
// links every picture; attention weights from the model are proper distributions.
using System.Text.Json;
using FastAttention.Analysis;

namespace FastAttention.Tests.Analysis;

[TestFixture]
[NonParallelizable]
public sealed class MapsCommandTests
{
    private string _dir = "";
    private MapsResult _result = null!;

    [OneTimeSetUp]
    public void Run()
    {
        _dir = Directory.CreateTempSubdirectory("fa-maps-").FullName;
        _result = MapsCommand.Run("The cat sat on the mat because it was tired.", layer: 1, outDir: _dir);
    }

    [OneTimeTearDown]
    public void Remove() => Directory.Delete(_dir, recursive: true);

    [Test]
    public void WritesEveryPictureValidAndNonTrivial()
    {
        // 12 single-head heatmaps, the grid, the causal comparison, the layer chart, the model chart.
        Assert.That(_result.Pictures, Has.Count.EqualTo(MiniLmModel.Heads + 4));
        Assert.That(Directory.GetFiles(_dir, "*.png").Order(), Is.EquivalentTo(_result.Pictures.Order()));
        Assert.Multiple(() =>
        {
            foreach (var picture in _result.Pictures) PictureTests.CheckPng(picture);
        });
    }

    [Test]
    public void ReportLinksEveryPictureAndTheData()
    {
        string html = File.ReadAllText(_result.Report);
        Assert.Multiple(() =>
        {
            foreach (var picture in Directory.GetFiles(_dir, "*.png"))
            {
                string name = Path.GetFileName(picture);
                Assert.That(html, Does.Contain($"href=\"{name}\""), name);
                Assert.That(html, Does.Contain($"src=\"{name}\"").Or.Contain($"href=\"{name}\""), name);
            }
            Assert.That(html, Does.Contain("href=\"stats.json\""));
            Assert.That(html, Does.Contain("href=\"stats.csv\""));
            Assert.That(html, Does.Contain("<table>"));
        });
    }

    [Test]
    public void StatisticsFilesCoverEveryLayerHeadAndMode()
    {
        int expected = 2 * 6 * MiniLmModel.Heads; // bidirectional + causal, 6 layers, 12 heads
        string[] lines = File.ReadAllLines(_result.StatisticsCsv);
        Assert.That(lines[0], Is.EqualTo(MapsCommand.CsvHeader));
        Assert.That(lines, Has.Length.EqualTo(1 + expected));
        using var json = JsonDocument.Parse(File.ReadAllText(_result.StatisticsJson));
        var heads = json.RootElement.GetProperty("heads");
        Assert.That(heads.GetArrayLength(), Is.EqualTo(expected));
        Assert.That(json.RootElement.GetProperty("tokens").GetArrayLength(), Is.EqualTo(_result.Run.Length));
        foreach (var head in heads.EnumerateArray())
        {
            double h = head.GetProperty("normalizedEntropy").GetDouble();
            Assert.That(h, Is.InRange(0, 1 + 1e-6));
        }
    }

    [Test]
    public void ModelWeightsAreDistributionsAndCausalMapsAreLowerTriangular()
    {
        var run = _result.Run;
        int n = run.Length;
        for (int layer = 0; layer < 6; layer++)
        {
            for (int head = 0; head < MiniLmModel.Heads; head++)
            {
                float[] map = run.Map(layer, head), causal = run.Map(layer, head, causal: true);
                for (int i = 0; i < n; i++)
                {
                    Assert.That(map.AsSpan(i * n, n).ToArray().Sum(), Is.EqualTo(1).Within(1e-5), $"layer {layer} head {head} row {i}");
                    Assert.That(causal.AsSpan(i * n, n).ToArray().Sum(), Is.EqualTo(1).Within(1e-5));
                    for (int j = i + 1; j < n; j++) Assert.That(causal[i * n + j], Is.Zero);
                }
            }
        }
    }

    [Test]
    public void BadLayerOrHeadThrowsBeforeWriting()
    {
        string dir = Path.Combine(_dir, "never");
        Assert.Multiple(() =>
        {
            Assert.That(() => MapsCommand.Run("x", 6, dir), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("layer"));
            Assert.That(() => MapsCommand.Run("x", -1, dir), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("layer"));
            Assert.That(() => MapsCommand.Run("x", 0, dir, head: 12), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("head"));
        });
        Assert.That(Directory.Exists(dir), Is.False);
    }
}
