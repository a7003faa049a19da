// A BERT encoder (post-LayerNorm, erf GELU) in fp32 whose attention runs through FastAttention's MultiHeadAttention.
using System.Numerics.Tensors;
using FastAttention.Cpu;

namespace FastAttention.Analysis.Model;

/// <summary>Result of <see cref="BertEncoder.Forward"/>.</summary>
/// <param name="Batch">Sequences.</param>
/// <param name="SequenceLength">Padded length S (the longest sequence).</param>
/// <param name="Hidden">Hidden width.</param>
/// <param name="Lengths">Valid tokens per sequence <c>[B]</c>.</param>
/// <param name="LastHiddenState"><c>[B, S, hidden]</c>. Padded rows are computed as the ONNX export computes them (they attend to the valid keys).</param>
/// <param name="Probabilities">When requested: per layer, the attention weights <c>[B, H, S, S]</c>; else null.</param>
public sealed record EncoderOutput(int Batch, int SequenceLength, int Hidden, int[] Lengths, float[] LastHiddenState, IReadOnlyList<float[]>? Probabilities)
{
    /// <summary>
    /// Sentence embeddings as sentence-transformers builds them for all-MiniLM-L6-v2: the mean of the last hidden state over
    /// the valid tokens of each sequence (padding excluded), <c>[B, hidden]</c>; L2-normalised when <paramref name="normalize"/>.
    /// </summary>
    public float[] MeanPool(bool normalize = false)
    {
        var pooled = new float[Batch * Hidden];
        for (int b = 0; b < Batch; b++)
        {
            var acc = new double[Hidden];
            for (int s = 0; s < Lengths[b]; s++)
            {
                var row = LastHiddenState.AsSpan((b * SequenceLength + s) * Hidden, Hidden);
                for (int i = 0; i < Hidden; i++) acc[i] += row[i];
            }
            double norm = 0;
            for (int i = 0; i < Hidden; i++)
            {
                acc[i] /= Math.Max(1, Lengths[b]);
                norm += acc[i] * acc[i];
            }
            double scale = normalize ? 1 / Math.Max(Math.Sqrt(norm), 1e-12) : 1;
            for (int i = 0; i < Hidden; i++) pooled[b * Hidden + i] = (float)(acc[i] * scale);
        }
        return pooled;
    }
}

/// <summary>
/// The BERT encoder of all-MiniLM-L6-v2 (and any Hugging Face BERT export of the same form): embeddings (word + position +
/// token type, LayerNorm), then per layer <c>x = LN(x + MHA(x))</c>, <c>x = LN(x + W2·GELU(W1·x + b1) + b2)</c>, in fp32.
/// The attention (with its Q/K/V/O projections) is FastAttention's <see cref="MultiHeadAttention"/>; the feed-forward uses
/// <see cref="CpuGemm.Linear"/>; LayerNorm (mean and variance accumulated in double) and the exact erf GELU are written here.
/// Padding: each sequence's valid length goes to the attention as its key length, which is what the export's additive
/// <c>(1 - mask)·-10000</c> mask does in fp32 (exp underflows to exactly 0).
/// </summary>
public sealed class BertEncoder
{
    private readonly BertWeights _weights;
    private readonly MultiHeadAttention[] _attention;
    private readonly int _parallelism;

    /// <summary>Builds the encoder.</summary>
    /// <param name="weights">Weights (e.g. <see cref="BertWeights.FromOnnx"/>).</param>
    /// <param name="heads">Attention heads (12 for all-MiniLM-L6-v2).</param>
    /// <param name="causal">Causal attention instead of the model's bidirectional attention (an experiment: the model was not trained so).</param>
    /// <param name="maxDegreeOfParallelism">Worker threads; -1 = all processors.</param>
    /// <param name="backend">Attention backend; null = CPU.</param>
    public BertEncoder(BertWeights weights, int heads = 12, bool causal = false, int maxDegreeOfParallelism = -1, IAttentionBackend? backend = null)
    {
        ArgumentNullException.ThrowIfNull(weights);
        _weights = weights;
        _parallelism = maxDegreeOfParallelism;
        Heads = heads;
        Causal = causal;
        var config = new AttentionConfig(weights.Hidden, heads, causal: causal);
        _attention = new MultiHeadAttention[weights.Layers.Count];
        for (int l = 0; l < _attention.Length; l++)
        {
            var w = weights.Layers[l];
            _attention[l] = new MultiHeadAttention(config, backend, maxDegreeOfParallelism);
            _attention[l].SetWeights(w.Query, w.Key, w.Value, w.AttentionOutput, w.QueryBias, w.KeyBias, w.ValueBias, w.AttentionOutputBias);
        }
    }

    /// <summary>Attention heads.</summary>
    public int Heads { get; }
    /// <summary>Whether attention is causal.</summary>
    public bool Causal { get; }
    /// <summary>Encoder layers.</summary>
    public int Layers => _attention.Length;
    /// <summary>Weights.</summary>
    public BertWeights Weights => _weights;

    /// <summary>Runs the encoder on a batch of token id sequences (padded to the longest with id 0).</summary>
    /// <param name="tokenIds">Per sequence its ids, [CLS] ... [SEP] included.</param>
    /// <param name="captureProbabilities">Also return each layer's attention weights <c>[B, H, S, S]</c>.</param>
    /// <exception cref="ArgumentException">No sequence, an empty sequence, one longer than the position table, or an id outside the vocabulary.</exception>
    public EncoderOutput Forward(IReadOnlyList<int[]> tokenIds, bool captureProbabilities = false)
    {
        ArgumentNullException.ThrowIfNull(tokenIds);
        if (tokenIds.Count == 0) throw new ArgumentException("At least one sequence is needed.", nameof(tokenIds));
        int batch = tokenIds.Count, hidden = _weights.Hidden;
        int[] lengths = [.. tokenIds.Select(t => t.Length)];
        int seq = lengths.Max();
        if (lengths.Min() == 0) throw new ArgumentException("A sequence is empty.", nameof(tokenIds));
        if (seq > _weights.MaxPositions) throw new ArgumentException($"A sequence has {seq} tokens; the model has {_weights.MaxPositions} positions.", nameof(tokenIds));

        var x = new float[batch * seq * hidden];
        for (int b = 0; b < batch; b++)
        {
            for (int s = 0; s < seq; s++)
            {
                int id = s < lengths[b] ? tokenIds[b][s] : 0;
                if ((uint)id >= (uint)_weights.VocabSize) throw new ArgumentException($"Token id {id} (sequence {b}, position {s}) is outside the vocabulary of {_weights.VocabSize}.", nameof(tokenIds));
                var row = x.AsSpan((b * seq + s) * hidden, hidden);
                TensorPrimitives.Add(_weights.WordEmbeddings.AsSpan(id * hidden, hidden), _weights.PositionEmbeddings.AsSpan(s * hidden, hidden), row);
                TensorPrimitives.Add(row, _weights.TokenTypeEmbeddings.AsSpan(0, hidden), row);
            }
        }
        LayerNorm(x, hidden, _weights.EmbeddingNormWeight, _weights.EmbeddingNormBias, _weights.LayerNormEpsilon);

        int inter = _weights.IntermediateSize;
        var attended = new float[x.Length];
        var up = new float[batch * seq * inter];
        var down = new float[x.Length];
        var probabilities = captureProbabilities ? new List<float[]>() : null;
        nint[] shape = [batch, seq, hidden];
        for (int l = 0; l < _attention.Length; l++)
        {
            var w = _weights.Layers[l];
            TensorSpan<float> probs = default;
            if (probabilities is not null)
            {
                var p = new float[batch * Heads * seq * seq];
                probabilities.Add(p);
                probs = new TensorSpan<float>(p, [batch, Heads, seq, seq]);
            }
            _attention[l].Forward(new ReadOnlyTensorSpan<float>(x, shape, default), new TensorSpan<float>(attended, shape, default),
                keyLengths: lengths, probabilities: probs);
            TensorPrimitives.Add(x, attended, x);
            LayerNorm(x, hidden, w.AttentionNormWeight, w.AttentionNormBias, _weights.LayerNormEpsilon);

            CpuGemm.Linear(new ReadOnlyTensorSpan<float>(x, [batch * seq, hidden], default), w.Intermediate, w.IntermediateBias,
                new TensorSpan<float>(up, [batch * seq, inter], default), _parallelism);
            Gelu(up);
            CpuGemm.Linear(new ReadOnlyTensorSpan<float>(up, [batch * seq, inter], default), w.Output, w.OutputBias,
                new TensorSpan<float>(down, [batch * seq, hidden], default), _parallelism);
            TensorPrimitives.Add(x, down, x);
            LayerNorm(x, hidden, w.OutputNormWeight, w.OutputNormBias, _weights.LayerNormEpsilon);
        }
        return new EncoderOutput(batch, seq, hidden, lengths, x, probabilities);
    }

    /// <summary>LayerNorm over rows of <paramref name="width"/>: <c>(x - mean) / sqrt(var + eps) · gain + bias</c>, biased variance, in place.</summary>
    public static void LayerNorm(Span<float> x, int width, ReadOnlySpan<float> gain, ReadOnlySpan<float> bias, float epsilon)
    {
        for (int start = 0; start < x.Length; start += width)
        {
            var row = x.Slice(start, width);
            double mean = 0;
            foreach (float v in row) mean += v;
            mean /= width;
            double variance = 0;
            foreach (float v in row) variance += (v - mean) * (v - mean);
            variance /= width;
            double inv = 1 / Math.Sqrt(variance + epsilon);
            for (int i = 0; i < width; i++) row[i] = (float)((row[i] - mean) * inv * gain[i] + bias[i]);
        }
    }

    /// <summary>The exact GELU BERT uses, <c>x · (1 + erf(x / √2)) / 2</c>, in place.</summary>
    public static void Gelu(Span<float> x)
    {
        for (int i = 0; i < x.Length; i++)
        {
            double v = x[i];
            x[i] = (float)(0.5 * v * (1 + Erf.Compute(v / Math.Sqrt(2))));
        }
    }
}
