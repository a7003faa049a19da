// Weights of a BERT encoder (as exported by Hugging Face to ONNX), mapped from the graph's initializers.
using System.Text.RegularExpressions;

namespace FastAttention.Analysis.Model;

/// <summary>One encoder layer's weights. Linear weights are <c>[out, in]</c> row-major (PyTorch's <c>nn.Linear</c>).</summary>
public sealed class BertLayerWeights
{
    /// <summary>Query projection <c>[hidden, hidden]</c> and bias.</summary>
    public required float[] Query, QueryBias;
    /// <summary>Key projection and bias.</summary>
    public required float[] Key, KeyBias;
    /// <summary>Value projection and bias.</summary>
    public required float[] Value, ValueBias;
    /// <summary>Attention output projection and bias.</summary>
    public required float[] AttentionOutput, AttentionOutputBias;
    /// <summary>LayerNorm after attention (gain, bias).</summary>
    public required float[] AttentionNormWeight, AttentionNormBias;
    /// <summary>Feed-forward up projection <c>[intermediate, hidden]</c> and bias.</summary>
    public required float[] Intermediate, IntermediateBias;
    /// <summary>Feed-forward down projection <c>[hidden, intermediate]</c> and bias.</summary>
    public required float[] Output, OutputBias;
    /// <summary>LayerNorm after the feed-forward (gain, bias).</summary>
    public required float[] OutputNormWeight, OutputNormBias;
}

/// <summary>
/// Weights of a BERT encoder read from an ONNX export. Named initializers (embeddings, LayerNorms, biases) are taken
/// by name; the projection matrices are anonymous in the export (<c>MatMul(x, W)</c> with W <c>[in, out]</c>), so each is
/// identified by the <c>Add</c> that follows its MatMul and adds a named bias (<c>encoder.layer.N.attention.self.query.bias</c>
/// names the query weight of layer N), then transposed to <c>[out, in]</c>.
/// </summary>
public sealed partial class BertWeights
{
    /// <summary>Vocabulary size.</summary>
    public int VocabSize { get; private init; }
    /// <summary>Hidden width.</summary>
    public int Hidden { get; private init; }
    /// <summary>Feed-forward width.</summary>
    public int IntermediateSize { get; private init; }
    /// <summary>Maximum positions.</summary>
    public int MaxPositions { get; private init; }
    /// <summary>Word embeddings <c>[vocab, hidden]</c>.</summary>
    public required float[] WordEmbeddings { get; init; }
    /// <summary>Position embeddings <c>[maxPositions, hidden]</c>.</summary>
    public required float[] PositionEmbeddings { get; init; }
    /// <summary>Token type embeddings <c>[types, hidden]</c>.</summary>
    public required float[] TokenTypeEmbeddings { get; init; }
    /// <summary>Embedding LayerNorm gain and bias.</summary>
    public required float[] EmbeddingNormWeight { get; init; }
    /// <summary>Embedding LayerNorm bias.</summary>
    public required float[] EmbeddingNormBias { get; init; }
    /// <summary>Encoder layers.</summary>
    public required IReadOnlyList<BertLayerWeights> Layers { get; init; }
    /// <summary>LayerNorm epsilon found in the graph (1e-12 for BERT).</summary>
    public float LayerNormEpsilon { get; private init; }

    [GeneratedRegex(@"^encoder\.layer\.(\d+)\.(.+)\.bias$")]
    private static partial Regex LayerBias();

    /// <summary>Maps an ONNX BERT export to weights.</summary>
    /// <exception cref="InvalidDataException">A tensor is missing or has an unexpected shape (message names it).</exception>
    public static BertWeights FromOnnx(OnnxModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var init = model.Initializers;
        float[] Named(string name) => init.TryGetValue(name, out var t) && t.DataType == 1
            ? t.Floats
            : throw new InvalidDataException($"The ONNX model has no float initializer '{name}'.");

        // MatMul output -> (weight initializer) for MatMuls whose second input is an initializer.
        var matmulWeight = new Dictionary<string, OnnxTensor>();
        foreach (var node in model.Nodes)
        {
            if (node.OpType == "MatMul" && node.Inputs.Length == 2 && init.TryGetValue(node.Inputs[1], out var w) && w.Dims.Length == 2)
            {
                matmulWeight[node.Outputs[0]] = w;
            }
        }
        var projections = new Dictionary<(int Layer, string Part), float[]>();
        foreach (var node in model.Nodes)
        {
            if (node.OpType != "Add" || node.Inputs.Length != 2) continue;
            for (int side = 0; side < 2; side++)
            {
                if (LayerBias().Match(node.Inputs[side]) is { Success: true } m && matmulWeight.TryGetValue(node.Inputs[1 - side], out var w))
                {
                    projections[(int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), m.Groups[2].Value)] = Transpose(w);
                }
            }
        }
        int layers = projections.Keys.Select(k => k.Layer).DefaultIfEmpty(-1).Max() + 1;
        if (layers == 0) throw new InvalidDataException("No encoder layer projections found in the ONNX graph.");
        float[] Projection(int l, string part) => projections.TryGetValue((l, part), out var w)
            ? w
            : throw new InvalidDataException($"No MatMul weight feeds the bias 'encoder.layer.{l}.{part}.bias'.");

        var list = new List<BertLayerWeights>();
        for (int l = 0; l < layers; l++)
        {
            string p = $"encoder.layer.{l}.";
            list.Add(new BertLayerWeights
            {
                Query = Projection(l, "attention.self.query"), QueryBias = Named(p + "attention.self.query.bias"),
                Key = Projection(l, "attention.self.key"), KeyBias = Named(p + "attention.self.key.bias"),
                Value = Projection(l, "attention.self.value"), ValueBias = Named(p + "attention.self.value.bias"),
                AttentionOutput = Projection(l, "attention.output.dense"), AttentionOutputBias = Named(p + "attention.output.dense.bias"),
                AttentionNormWeight = Named(p + "attention.output.LayerNorm.weight"), AttentionNormBias = Named(p + "attention.output.LayerNorm.bias"),
                Intermediate = Projection(l, "intermediate.dense"), IntermediateBias = Named(p + "intermediate.dense.bias"),
                Output = Projection(l, "output.dense"), OutputBias = Named(p + "output.dense.bias"),
                OutputNormWeight = Named(p + "output.LayerNorm.weight"), OutputNormBias = Named(p + "output.LayerNorm.bias"),
            });
        }
        var word = init.GetValueOrDefault("embeddings.word_embeddings.weight") ?? throw new InvalidDataException("No embeddings.word_embeddings.weight.");
        var pos = init.GetValueOrDefault("embeddings.position_embeddings.weight") ?? throw new InvalidDataException("No embeddings.position_embeddings.weight.");
        int hidden = (int)word.Dims[1];
        // The export spells LayerNorm out (ReduceMean, Pow, Add eps, Sqrt): the epsilon is the scalar Constant added before Sqrt.
        float epsilon = FindLayerNormEpsilon(model) ?? 1e-12f;
        return new BertWeights
        {
            VocabSize = (int)word.Dims[0],
            Hidden = hidden,
            MaxPositions = (int)pos.Dims[0],
            IntermediateSize = list[0].IntermediateBias.Length,
            WordEmbeddings = word.Floats,
            PositionEmbeddings = pos.Floats,
            TokenTypeEmbeddings = Named("embeddings.token_type_embeddings.weight"),
            EmbeddingNormWeight = Named("embeddings.LayerNorm.weight"),
            EmbeddingNormBias = Named("embeddings.LayerNorm.bias"),
            Layers = list,
            LayerNormEpsilon = epsilon,
        };
    }

    private static float? FindLayerNormEpsilon(OnnxModel model)
    {
        var constants = model.Nodes.Where(n => n.OpType == "Constant" && n.Tensors.TryGetValue("value", out var t) && t.Floats.Length == 1)
            .ToDictionary(n => n.Outputs[0], n => n.Tensors["value"].Floats[0]);
        var producers = model.Nodes.SelectMany(n => n.Outputs.Select(o => (o, n))).ToDictionary(x => x.o, x => x.n);
        foreach (var sqrt in model.Nodes.Where(n => n.OpType == "Sqrt"))
        {
            if (producers.TryGetValue(sqrt.Inputs[0], out var add) && add.OpType == "Add")
            {
                foreach (var input in add.Inputs)
                {
                    if (constants.TryGetValue(input, out float eps)) return eps;
                }
            }
        }
        return null;
    }

    private static float[] Transpose(OnnxTensor w)
    {
        int rows = (int)w.Dims[0], cols = (int)w.Dims[1]; // [in, out]
        var t = new float[rows * cols];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < cols; c++) t[c * rows + r] = w.Floats[r * cols + c];
        }
        return t;
    }
}
