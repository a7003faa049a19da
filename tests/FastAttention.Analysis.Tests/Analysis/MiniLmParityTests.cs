// The real-model check: all-MiniLM-L6-v2 run by FastAttention (weights read from the package's ONNX file) against ONNX
// Runtime running that same ONNX file on the same token ids. Sentence embeddings (mean pooling over the valid tokens of
// last_hidden_state, as sentence-transformers pools this model) must agree to cosine >= 0.99999 and max |diff| <= 1e-4.
using FastAttention.Analysis;
using FastAttention.Analysis.Model;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace FastAttention.Tests.Analysis;

[TestFixture]
[NonParallelizable] // the model uses every core; the tests run one after another
public sealed class MiniLmParityTests
{
    private const double MinCosine = 0.99999;
    private const double MaxAbsDiff = 1e-4;

    private InferenceSession _session = null!;
    private MiniLmModel _model = null!;

    internal static readonly string[] Sentences =
    [
        "Hi.",
        "The quick brown fox jumps over the lazy dog.",
        "Café owners in São Paulo reported a 12.5% rise in sales — unexpectedly! Didn't they?",
        "Attention maps show which tokens a head reads: some heads look at the previous word, others at [CLS] or [SEP], " +
        "and a few spread their weight evenly over the whole sentence, which is why entropy and distance are useful statistics.",
        LongText(),
    ];

    // Far more than 256 tokens: the tokenizer cuts it to exactly 256 ([SEP] kept).
    private static string LongText() => string.Join(" ", Enumerable.Range(0, 40).Select(i =>
        $"Sentence {i} talks about transformers, tokenization, embeddings and attention heads number {i % 12}."));

    [OneTimeSetUp]
    public void Load()
    {
        _model = MiniLmModel.Shared;
        using var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1 };
        _session = new InferenceSession(MiniLmResources.OnnxBytes, options);
    }

    [OneTimeTearDown]
    public void Dispose() => _session?.Dispose();

    /// <summary>ONNX Runtime's last_hidden_state <c>[B, S, 384]</c> for the token ids, padded to the longest (mask 0, id 0).</summary>
    private float[] RunOnnx(IReadOnlyList<int[]> ids)
    {
        int b = ids.Count, s = ids.Max(x => x.Length);
        var inputIds = new DenseTensor<long>([b, s]);
        var mask = new DenseTensor<long>([b, s]);
        var types = new DenseTensor<long>([b, s]);
        for (int i = 0; i < b; i++)
        {
            for (int t = 0; t < ids[i].Length; t++)
            {
                inputIds[i, t] = ids[i][t];
                mask[i, t] = 1;
            }
        }
        using var results = _session.Run(
        [
            NamedOnnxValue.CreateFromTensor("input_ids", inputIds),
            NamedOnnxValue.CreateFromTensor("attention_mask", mask),
            NamedOnnxValue.CreateFromTensor("token_type_ids", types),
        ]);
        return results.First(r => r.Name == "last_hidden_state").AsTensor<float>().ToArray();
    }

    private static (double Cosine, double MaxAbs) Compare(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dot = 0, na = 0, nb = 0, max = 0;
        for (int i = 0; i < a.Length; i++)
        {
            dot += (double)a[i] * b[i];
            na += (double)a[i] * a[i];
            nb += (double)b[i] * b[i];
            max = Math.Max(max, Math.Abs(a[i] - b[i]));
        }
        return (dot / Math.Sqrt(na * nb), max);
    }

    private void CheckBatch(IReadOnlyList<int[]> ids, string what)
    {
        var ours = _model.Encoder.Forward(ids);
        float[] onnxHidden = RunOnnx(ids);
        var theirs = new EncoderOutput(ours.Batch, ours.SequenceLength, ours.Hidden, ours.Lengths, onnxHidden, null);
        int hidden = ours.Hidden;
        foreach (bool normalize in new[] { false, true })
        {
            float[] a = ours.MeanPool(normalize), b = theirs.MeanPool(normalize);
            for (int i = 0; i < ids.Count; i++)
            {
                var (cosine, maxAbs) = Compare(a.AsSpan(i * hidden, hidden), b.AsSpan(i * hidden, hidden));
                TestContext.Out.WriteLine($"{what}, sequence {i} ({ids[i].Length} tokens), {(normalize ? "normalised" : "mean-pooled")}: cosine {cosine:F9} (1 - cosine = {1 - cosine:E1}), max |diff| {maxAbs:E2}");
                Assert.That(cosine, Is.GreaterThanOrEqualTo(MinCosine), $"{what}, sequence {i}: cosine");
                Assert.That(maxAbs, Is.LessThanOrEqualTo(MaxAbsDiff), $"{what}, sequence {i}: max |diff|");
            }
        }
        // The token states themselves (valid tokens), for the record and a looser bound.
        double tokenMax = 0;
        for (int i = 0; i < ids.Count; i++)
        {
            for (int t = 0; t < ids[i].Length; t++)
            {
                int o = (i * ours.SequenceLength + t) * hidden;
                tokenMax = Math.Max(tokenMax, Compare(ours.LastHiddenState.AsSpan(o, hidden), onnxHidden.AsSpan(o, hidden)).MaxAbs);
            }
        }
        TestContext.Out.WriteLine($"{what}: last_hidden_state max |diff| over valid tokens {tokenMax:E2}");
        Assert.That(tokenMax, Is.LessThanOrEqualTo(1e-3), $"{what}: last_hidden_state");
    }

    [Test]
    public void TokenizerAddsSpecialTokensLowerCasesAndCutsAt256()
    {
        var tokenizer = _model.Tokenizer;
        int[] ids = tokenizer.Encode("Hello World");
        Assert.That(tokenizer.Tokens(ids), Is.EqualTo(new[] { "[CLS]", "hello", "world", "[SEP]" }));
        int[] longIds = tokenizer.Encode(LongText());
        Assert.Multiple(() =>
        {
            Assert.That(longIds, Has.Length.EqualTo(MiniLmTokenizer.MaxTokens));
            Assert.That(longIds[0], Is.EqualTo(tokenizer.ClsId));
            Assert.That(longIds[^1], Is.EqualTo(tokenizer.SepId));
        });
    }

    [Test]
    public void AccentsAreStrippedAsBertUncasedDoes()
    {
        var tokenizer = _model.Tokenizer;
        Assert.That(tokenizer.Tokens(tokenizer.Encode("Café São naïve e\u0301")), Is.EqualTo(new[] { "[CLS]", "cafe", "sao", "naive", "e", "[SEP]" }));
        // Every letter of the two tables maps (the tables cover their ranges exactly).
        string all = new([.. Enumerable.Range(0xC0, 0x180 - 0xC0).Select(c => (char)c)]);
        string stripped = MiniLmTokenizer.StripAccents(all);
        Assert.Multiple(() =>
        {
            Assert.That(stripped, Has.Length.EqualTo(all.Length));
            Assert.That(MiniLmTokenizer.StripAccents("ÀÉÎÕÜÝàéîõüÿĀăĆčĎěĞĥĨİĴķĹľŃňŌőŔřŚšŢťŨųŴŷŸŹž"), Is.EqualTo("AEIOUYaeiouyAaCcDeGhIIJkLlNnOoRrSsTtUuWyYZz"));
            Assert.That(MiniLmTokenizer.StripAccents("ÆØßĐŁŒ東京"), Is.EqualTo("ÆØßĐŁŒ東京"));
        });
    }

    [TestCaseSource(nameof(SentenceIndexes))]
    public void SingleSentenceMatchesOnnxRuntime(int index)
    {
        int[] ids = _model.Tokenizer.Encode(Sentences[index]);
        CheckBatch([ids], $"sentence {index}");
    }

    private static IEnumerable<int> SentenceIndexes() => Enumerable.Range(0, Sentences.Length);

    [Test]
    public void PaddedBatchMatchesOnnxRuntime()
    {
        // Lengths from 3 to 256 in one batch: every sequence but the longest is padded.
        var ids = Sentences.Select(s => _model.Tokenizer.Encode(s)).ToList();
        Assert.That(ids.Select(x => x.Length).Distinct().Count(), Is.EqualTo(ids.Count), "varied lengths");
        Assert.That(ids.Max(x => x.Length), Is.EqualTo(256));
        CheckBatch(ids, "padded batch");
    }

    [Test]
    public void PaddingDoesNotChangeAnEmbedding()
    {
        // A short sentence alone and padded next to a 256-token one: same embedding (to fp32 rounding).
        var shortIds = _model.Tokenizer.Encode(Sentences[1]);
        var alone = _model.Encoder.Forward([shortIds]).MeanPool();
        var padded = _model.Encoder.Forward([shortIds, _model.Tokenizer.Encode(Sentences[^1])]).MeanPool();
        var (cosine, maxAbs) = Compare(alone, padded.AsSpan(0, alone.Length));
        Assert.That(cosine, Is.GreaterThanOrEqualTo(MinCosine));
        Assert.That(maxAbs, Is.LessThanOrEqualTo(MaxAbsDiff));
    }
}
