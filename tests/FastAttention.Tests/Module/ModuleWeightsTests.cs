// MultiHeadAttention weights: SetWeights validation (nothing changes on error), the accessors, the
// SaveWeights/LoadWeights file (bit-exact round trip, documented layout, shape mismatch, truncation,
// bad magic) and InitializeRandom (reproducible per seed, Xavier-uniform bound, zero biases).

using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Module;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class ModuleWeightsTests
{
    // modelDim 30, H 6, Hkv 2, D 7: Wq [42, 30], Wk/Wv [14, 30], Wo [30, 42], bq [42], bk/bv [14], bo [30].
    private static AttentionConfig Gqa(bool bias = true) => new(30, 6, 2, 7, bias: bias);

    private static readonly int[] GqaLengths = [42 * 30, 14 * 30, 14 * 30, 30 * 42, 42, 14, 14, 30];

    private static void Set(MultiHeadAttention m, float[][] w) => m.SetWeights(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]);

    private static byte[] Save(MultiHeadAttention m)
    {
        using var s = new MemoryStream();
        m.SaveWeights(s);
        return s.ToArray();
    }

    [TestCase(true)]
    [TestCase(false)]
    public void SetWeightsIsReadBackExactly(bool bias)
    {
        var c = Gqa(bias);
        var m = new MultiHeadAttention(c);
        var w = ModuleData.RandomWeights(c, 81);
        Set(m, w);
        ModuleData.AssertBitwise(ModuleData.Snapshot(m), w, "read back");
        for (int i = 0; i < 8; i++)
        {
            Assert.That(w[i], Has.Length.EqualTo(i < 4 || bias ? GqaLengths[i] : 0), ModuleData.WeightNames[i]);
        }
        // The module copied them: changing the caller's arrays changes nothing.
        var before = ModuleData.Snapshot(m);
        foreach (var a in w) Array.Fill(a, 7f);
        ModuleData.AssertBitwise(ModuleData.Snapshot(m), before, "after the caller's arrays changed");
    }

    private static IEnumerable<TestCaseData> WrongLengths()
    {
        for (int i = 0; i < 8; i++)
        {
            foreach (int delta in new[] { -1, 1, -GqaLengths[i] })
            {
                yield return new TestCaseData(i, GqaLengths[i] + delta).SetArgDisplayNames(ModuleData.WeightNames[i], $"{GqaLengths[i] + delta} of {GqaLengths[i]}");
            }
        }
    }

    [TestCaseSource(nameof(WrongLengths))]
    public void SetWeightsRejectsAWrongLengthAndChangesNothing(int which, int length)
    {
        var c = Gqa();
        var m = ModuleData.Create(c, 82);
        var before = ModuleData.Snapshot(m);
        var w = ModuleData.RandomWeights(c, 83);
        w[which] = new Rng(84).Normal<float>(length);
        var ex = Assert.Throws<ArgumentException>(() => Set(m, w))!;
        Assert.That(ex.ParamName, Is.EqualTo(ModuleData.WeightNames[which]));
        Assert.That(ex.Message, Does.Contain(length.ToString()).And.Contain(GqaLengths[which].ToString()), "message has the given and expected lengths");
        ModuleData.AssertBitwise(ModuleData.Snapshot(m), before, "after a rejected SetWeights");
    }

    [TestCase(4)]
    [TestCase(5)]
    [TestCase(6)]
    [TestCase(7)]
    public void SetWeightsRejectsABiasForANoBiasConfig(int which)
    {
        var c = Gqa(bias: false);
        var m = ModuleData.Create(c, 85);
        var before = ModuleData.Snapshot(m);
        var w = ModuleData.RandomWeights(c, 86);
        w[which] = new Rng(87).Normal<float>(GqaLengths[which]);
        var ex = Assert.Throws<ArgumentException>(() => Set(m, w))!;
        Assert.That(ex.ParamName, Is.EqualTo(ModuleData.WeightNames[which]));
        Assert.That(ex.Message, Does.Contain(GqaLengths[which].ToString()));
        ModuleData.AssertBitwise(ModuleData.Snapshot(m), before, "after a rejected SetWeights");
    }

    [TestCase(4)]
    [TestCase(5)]
    [TestCase(6)]
    [TestCase(7)]
    public void SetWeightsRejectsAMissingBias(int which)
    {
        var c = Gqa();
        var m = ModuleData.Create(c, 88);
        var before = ModuleData.Snapshot(m);
        var w = ModuleData.RandomWeights(c, 89);
        w[which] = [];
        var ex = Assert.Throws<ArgumentException>(() => Set(m, w))!;
        Assert.That(ex.ParamName, Is.EqualTo(ModuleData.WeightNames[which]));
        Assert.That(ex.Message, Does.Contain("0").And.Contain(GqaLengths[which].ToString()));
        ModuleData.AssertBitwise(ModuleData.Snapshot(m), before, "after a rejected SetWeights");

        // Omitting every bias (the optional parameters) is rejected too.
        ex = Assert.Throws<ArgumentException>(() => m.SetWeights(w[0], w[1], w[2], w[3]))!;
        Assert.That(ex.ParamName, Is.EqualTo("queryBias"));
        ModuleData.AssertBitwise(ModuleData.Snapshot(m), before, "after a rejected SetWeights");
    }

    [Test]
    public void NoBiasConfigHasEmptyBiasesAndIgnoresNone()
    {
        var c = Gqa(bias: false);
        var m = new MultiHeadAttention(c);
        var w = ModuleData.RandomWeights(c, 90);
        m.SetWeights(w[0], w[1], w[2], w[3]);
        Assert.That(m.QueryBias.IsEmpty && m.KeyBias.IsEmpty && m.ValueBias.IsEmpty && m.OutputBias.IsEmpty, Is.True);
    }

    // ---- Save / load ----

    [TestCase(true)]
    [TestCase(false)]
    public void SaveLoadRoundTripIsBitExact(bool bias)
    {
        var c = Gqa(bias);
        var w = ModuleData.RandomWeights(c, 91);
        // Special values must survive bit for bit.
        float[] specials = [-0f, float.Epsilon, -float.Epsilon, float.MaxValue, float.MinValue, float.PositiveInfinity,
            float.NegativeInfinity, BitConverter.Int32BitsToSingle(0x7FC0_1234), BitConverter.Int32BitsToSingle(unchecked((int)0xFFA0_0001)), 1e-40f];
        for (int i = 0; i < specials.Length; i++) w[i % 4][i * 7] = specials[i];
        if (bias) w[7][3] = -0f;
        var source = new MultiHeadAttention(c);
        Set(source, w);
        var bytes = Save(source);

        var target = ModuleData.Create(c, 92);
        using (var s = new MemoryStream(bytes)) target.LoadWeights(s);
        ModuleData.AssertBitwise(ModuleData.Snapshot(target), w, "loaded");

        // Forward of a finite-weight module after a round trip is bit-identical.
        var clean = ModuleData.Create(c, 93);
        var copy = ModuleData.Create(c, 94);
        using (var s = new MemoryStream(Save(clean))) copy.LoadWeights(s);
        var x = ModuleData.Input(2, 9, 30, 95);
        var (y1, _) = ModuleData.Run(clean, x, 2, 9, null, 9);
        var (y2, _) = ModuleData.Run(copy, x, 2, 9, null, 9);
        Tolerance.AssertBitwiseEqual(y2, y1, "forward after round trip", [2, 9, 30]);
    }

    [TestCase(true)]
    [TestCase(false)]
    public void FileLayoutIsAsDocumented(bool bias)
    {
        // magic "FMH1", modelDim, H, Hkv, D, bias flag (int32 little-endian), then Wq, Wk, Wv, Wo, [bq, bk, bv, bo] as fp32 little-endian.
        var c = Gqa(bias);
        var m = ModuleData.Create(c, 96);
        var bytes = Save(m);
        var expected = ModuleData.Snapshot(m);
        int floats = expected.Sum(a => a.Length);
        Assert.That(bytes, Has.Length.EqualTo(24 + 4 * floats));
        Assert.That(BitConverter.ToUInt32(bytes, 0), Is.EqualTo(0x3148_4D46u));
        Assert.That(System.Text.Encoding.ASCII.GetString(bytes, 0, 4), Is.EqualTo("FMH1"));
        int[] header = [.. Enumerable.Range(0, 5).Select(i => BitConverter.ToInt32(bytes, 4 + 4 * i))];
        Assert.That(header, Is.EqualTo(new[] { 30, 6, 2, 7, bias ? 1 : 0 }));
        int offset = 24;
        for (int a = 0; a < 8; a++)
        {
            for (int i = 0; i < expected[a].Length; i++, offset += 4)
            {
                if (BitConverter.ToInt32(bytes, offset) != BitConverter.SingleToInt32Bits(expected[a][i]))
                {
                    Assert.Fail($"{ModuleData.WeightNames[a]}[{i}] at byte {offset}");
                }
            }
        }
    }

    [Test]
    public void SeveralModulesShareOneStream()
    {
        // Save appends at the stream's position and Load reads exactly one module's bytes.
        var c1 = Gqa();
        var c2 = new AttentionConfig(16, 2, bias: false);
        var m1 = ModuleData.Create(c1, 97);
        var m2 = ModuleData.Create(c2, 98);
        using var s = new MemoryStream();
        s.WriteByte(42);
        m1.SaveWeights(s);
        m2.SaveWeights(s);
        s.WriteByte(43);
        Assert.That(s.CanRead, Is.True, "SaveWeights leaves the stream open");
        s.Position = 1;
        var l1 = new MultiHeadAttention(c1);
        var l2 = new MultiHeadAttention(c2);
        l1.LoadWeights(s);
        l2.LoadWeights(s);
        Assert.That(s.ReadByte(), Is.EqualTo(43), "LoadWeights reads exactly the module's bytes");
        ModuleData.AssertBitwise(ModuleData.Snapshot(l1), ModuleData.Snapshot(m1), "first module");
        ModuleData.AssertBitwise(ModuleData.Snapshot(l2), ModuleData.Snapshot(m2), "second module");
    }

    private static IEnumerable<TestCaseData> OtherShapes()
    {
        yield return new TestCaseData(new AttentionConfig(31, 6, 2, 7)).SetArgDisplayNames("modelDim 31");
        yield return new TestCaseData(new AttentionConfig(30, 4, 2, 7)).SetArgDisplayNames("H 4");
        yield return new TestCaseData(new AttentionConfig(30, 6, 3, 7)).SetArgDisplayNames("Hkv 3");
        yield return new TestCaseData(new AttentionConfig(30, 6, 6, 7)).SetArgDisplayNames("Hkv 6 (MHA)");
        yield return new TestCaseData(new AttentionConfig(30, 6, 2, 5)).SetArgDisplayNames("D 5");
        yield return new TestCaseData(new AttentionConfig(30, 6, 2, 7, bias: false)).SetArgDisplayNames("no bias");
        // Same element count (H·D = 42 both ways) but different shapes must still be refused.
        yield return new TestCaseData(new AttentionConfig(30, 3, 1, 14)).SetArgDisplayNames("H 3 D 14");
    }

    [TestCaseSource(nameof(OtherShapes))]
    public void LoadingOtherShapesThrowsAndChangesNothing(AttentionConfig other)
    {
        var bytes = Save(ModuleData.Create(Gqa(), 99));
        var m = ModuleData.Create(other, 100);
        var before = ModuleData.Snapshot(m);
        using var s = new MemoryStream(bytes);
        var ex = Assert.Throws<InvalidDataException>(() => m.LoadWeights(s))!;
        Assert.That(ex.Message, Does.Contain("(30, 6, 2, 7, 1)"), "message has the file's shapes");
        Assert.That(ex.Message, Does.Contain($"({other.ModelDim}, {other.Heads}, {other.KvHeads}, {other.HeadDim}, {(other.Bias ? 1 : 0)})"), "and the module's");
        ModuleData.AssertBitwise(ModuleData.Snapshot(m), before, "after a refused load");
    }

    [TestCase(0)]
    [TestCase(2)]
    [TestCase(4)]
    [TestCase(13)]
    [TestCase(24)]
    [TestCase(25)]
    [TestCase(24 + 4 * 1260)]
    [TestCase(-4)]
    [TestCase(-1)]
    public void TruncatedFileThrowsAndChangesNothing(int cut)
    {
        var c = Gqa();
        var bytes = Save(ModuleData.Create(c, 101));
        int keep = cut >= 0 ? cut : bytes.Length + cut;
        var m = ModuleData.Create(c, 102);
        var before = ModuleData.Snapshot(m);
        using var s = new MemoryStream(bytes, 0, keep);
        Assert.Throws<InvalidDataException>(() => m.LoadWeights(s), $"file cut to {keep} of {bytes.Length} bytes");
        ModuleData.AssertBitwise(ModuleData.Snapshot(m), before, "after a truncated load");
    }

    [Test]
    public void BadMagicThrowsAndChangesNothing()
    {
        var c = Gqa();
        var bytes = Save(ModuleData.Create(c, 103));
        bytes[3] ^= 0x01;
        var m = ModuleData.Create(c, 104);
        var before = ModuleData.Snapshot(m);
        using var s = new MemoryStream(bytes);
        var ex = Assert.Throws<InvalidDataException>(() => m.LoadWeights(s))!;
        Assert.That(ex.Message, Does.Contain("magic"));
        ModuleData.AssertBitwise(ModuleData.Snapshot(m), before, "after a bad-magic load");
    }

    [Test]
    public void NullStreamsThrow()
    {
        var m = new MultiHeadAttention(Gqa());
        Assert.That(Assert.Throws<ArgumentNullException>(() => m.SaveWeights(null!))!.ParamName, Is.EqualTo("stream"));
        Assert.That(Assert.Throws<ArgumentNullException>(() => m.LoadWeights(null!))!.ParamName, Is.EqualTo("stream"));
    }

    // ---- InitializeRandom ----

    [TestCase(true)]
    [TestCase(false)]
    public void InitializeRandomIsReproduciblePerSeed(bool bias)
    {
        var c = Gqa(bias);
        var a = new MultiHeadAttention(c);
        var b = ModuleData.Create(c, 105); // different weights and nonzero biases before
        a.InitializeRandom(7);
        b.InitializeRandom(7);
        ModuleData.AssertBitwise(ModuleData.Snapshot(b), ModuleData.Snapshot(a), "same seed");
        var first = ModuleData.Snapshot(a);
        a.InitializeRandom(7);
        ModuleData.AssertBitwise(ModuleData.Snapshot(a), first, "same seed again on the same module");

        b.InitializeRandom(8);
        var other = ModuleData.Snapshot(b);
        for (int i = 0; i < 4; i++)
        {
            Assert.That(other[i], Is.Not.EqualTo(first[i]), $"seed 8 vs 7: {ModuleData.WeightNames[i]}");
        }
    }

    [Test]
    public void InitializeRandomIsXavierUniformWithZeroBiases()
    {
        var c = Gqa();
        var m = ModuleData.Create(c, 106);
        m.InitializeRandom(3);
        var w = ModuleData.Snapshot(m);
        for (int i = 4; i < 8; i++) Assert.That(w[i], Is.All.EqualTo(0f), $"{ModuleData.WeightNames[i]} is zero");
        // Xavier-uniform per matrix: U(-a, a), a = sqrt(6 / (in + out)): Wq [42, 30], Wk/Wv [14, 30] (GQA), Wo [30, 42].
        double[] limits = [Math.Sqrt(6.0 / (30 + 42)), Math.Sqrt(6.0 / (30 + 14)), Math.Sqrt(6.0 / (30 + 14)), Math.Sqrt(6.0 / (30 + 42))];
        for (int i = 0; i < 4; i++)
        {
            var a = w[i];
            double limit = limits[i];
            Assert.That(a.Max(Math.Abs), Is.LessThanOrEqualTo(limit * (1 + 1e-6)), $"{ModuleData.WeightNames[i]} within ±{limit}");
            Assert.That(a.Max(Math.Abs), Is.GreaterThan(limit * 0.9), $"{ModuleData.WeightNames[i]} spans the range");
            double mean = a.Average(v => (double)v), meanSquare = a.Average(v => (double)v * v);
            Assert.That(mean, Is.EqualTo(0).Within(4 * limit / Math.Sqrt(3 * a.Length)), $"{ModuleData.WeightNames[i]} mean");
            Assert.That(meanSquare, Is.EqualTo(limit * limit / 3).Within(0.2 * limit * limit / 3), $"{ModuleData.WeightNames[i]} variance of U(-a, a)");
        }
        // The initialised module runs and gives finite output.
        var (y, _) = ModuleData.Run(m, ModuleData.Input(1, 5, 30, 107), 1, 5, null, 5);
        Tolerance.AssertNoNaN(y, "output", [1, 5, 30]);
    }
}
