// ONNX Runtime's CPU execution provider as an attention peer: one-node com.microsoft models, run in this process.
using Microsoft.ML.OnnxRuntime;

namespace FastAttention.Bench.Peers;

/// <summary>
/// Runs one attention shape through ONNX Runtime's CPU execution provider, on the same fp32 inputs as
/// FastAttention. The operator is the one that runs ONNX Runtime's flash-style CPU kernel for the case:
/// <list type="bullet">
/// <item>non-causal (and decode, Sq = 1): com.microsoft <c>MultiHeadAttention</c>, Q <c>[B, Sq, H·D]</c>,
/// K/V <c>[B, H, Sk, D]</c> (4-D K/V are used as they are; 3-D ones are re-laid out on every call);</item>
/// <item>causal: com.microsoft <c>GroupQueryAttention</c> (always causal, bottom-right aligned; Sq = Sk here),
/// Q <c>[B, S, H·D]</c>, K/V <c>[B, S, Hkv·D]</c>, <c>seqlens_k = S − 1</c>, <c>total_sequence_length = S</c>.</item>
/// </list>
/// <c>MultiHeadAttention</c> with <c>unidirectional=1</c> and the opset-23 <c>Attention</c> build the full S x S
/// score matrix on CPU, so they are not used. Outputs (and GQA's present K/V) are preallocated and bound, so a
/// timed call allocates nothing on the managed side.
/// </summary>
internal sealed class OnnxRuntimePeer : IDisposable
{
    private readonly InferenceSession _session;
    private readonly Microsoft.ML.OnnxRuntime.RunOptions _runOptions = new();
    private readonly string[] _inputNames;
    private readonly OrtValue[] _inputs;
    private readonly string[] _outputNames;
    private readonly OrtValue[] _outputs;

    /// <summary>The operator used, e.g. "com.microsoft MultiHeadAttention".</summary>
    public string Operator { get; }

    /// <summary>Output <c>[B, Sq, H, D]</c> of the last run (the bound buffer).</summary>
    public float[] Output { get; }

    /// <summary>ONNX Runtime's version string, or throws when the native library cannot be loaded.</summary>
    public static string Version => OrtEnv.Instance().GetVersionString();

    /// <summary>
    /// Builds the model and the session for <paramref name="c"/> over <paramref name="data"/>
    /// (<see cref="CompareData"/>: BSHD Q/K/V and BHSD K/V copies).
    /// </summary>
    /// <exception cref="NotSupportedException">The case has no flash-style ONNX Runtime operator (causal with Sq != Sk, GQA without causal).</exception>
    public OnnxRuntimePeer(CompareCase c, CompareData data, int threads)
    {
        int b = c.Batch, sq = c.SeqQ, sk = c.SeqK, h = c.Heads, hkv = c.KvHeads, d = c.HeadDim;
        Output = new float[(long)b * sq * h * d];
        float scale = 1f / MathF.Sqrt(d);
        byte[] model;
        var inputs = new List<(string Name, OrtValue Value)>();
        var outputs = new List<(string Name, OrtValue Value)>();
        if (!c.Causal)
        {
            if (h != hkv)
            {
                throw new NotSupportedException("MultiHeadAttention has no grouped K/V heads; non-causal GQA has no ONNX Runtime flash-style CPU operator.");
            }
            Operator = "com.microsoft MultiHeadAttention";
            var q = new OnnxValue("query", OnnxElementType.Float, "B", "Sq", h * d);
            var k = new OnnxValue("key", OnnxElementType.Float, "B", h, "Sk", d);
            var v = new OnnxValue("value", OnnxElementType.Float, "B", h, "Sk", d);
            var o = new OnnxValue("output", OnnxElementType.Float, "B", "Sq", h * d);
            model = OnnxModel.SingleNode("MultiHeadAttention", "com.microsoft", [q, k, v], [o],
                [new OnnxAttribute("num_heads", Int: h), new OnnxAttribute("scale", Float: scale)]);
            inputs.Add(("query", Tensor(data.Q, b, sq, h * d)));
            inputs.Add(("key", Tensor(data.KBhsd, b, h, sk, d)));
            inputs.Add(("value", Tensor(data.VBhsd, b, h, sk, d)));
            outputs.Add(("output", Tensor(Output, b, sq, h * d)));
        }
        else
        {
            if (sq != sk)
            {
                throw new NotSupportedException("GroupQueryAttention without a past cache needs Sq == Sk.");
            }
            Operator = "com.microsoft GroupQueryAttention";
            var q = new OnnxValue("query", OnnxElementType.Float, "B", "S", h * d);
            var k = new OnnxValue("key", OnnxElementType.Float, "B", "S", hkv * d);
            var v = new OnnxValue("value", OnnxElementType.Float, "B", "S", hkv * d);
            var seqlens = new OnnxValue("seqlens_k", OnnxElementType.Int32, "B");
            var total = new OnnxValue("total_sequence_length", OnnxElementType.Int32, 1);
            var o = new OnnxValue("output", OnnxElementType.Float, "B", "S", h * d);
            var pk = new OnnxValue("present_key", OnnxElementType.Float, "B", hkv, "S", d);
            var pv = new OnnxValue("present_value", OnnxElementType.Float, "B", hkv, "S", d);
            // Inputs in schema order; past_key/past_value are omitted (empty names).
            model = OnnxModel.SingleNode("GroupQueryAttention", "com.microsoft", [q, k, v, null, null, seqlens, total], [o, pk, pv],
                [new OnnxAttribute("num_heads", Int: h), new OnnxAttribute("kv_num_heads", Int: hkv), new OnnxAttribute("scale", Float: scale)]);
            inputs.Add(("query", Tensor(data.Q, b, sq, h * d)));
            inputs.Add(("key", Tensor(data.K, b, sk, hkv * d)));
            inputs.Add(("value", Tensor(data.V, b, sk, hkv * d)));
            inputs.Add(("seqlens_k", OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(sk - 1, b).ToArray(), [b])));
            inputs.Add(("total_sequence_length", OrtValue.CreateTensorValueFromMemory(new[] { sk }, [1])));
            outputs.Add(("output", Tensor(Output, b, sq, h * d)));
            outputs.Add(("present_key", Tensor(new float[(long)b * hkv * sk * d], b, hkv, sk, d)));
            outputs.Add(("present_value", Tensor(new float[(long)b * hkv * sk * d], b, hkv, sk, d)));
        }

        using var options = new SessionOptions
        {
            IntraOpNumThreads = threads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        _session = new InferenceSession(model, options);
        _inputNames = inputs.Select(i => i.Name).ToArray();
        _inputs = inputs.Select(i => i.Value).ToArray();
        _outputNames = outputs.Select(o => o.Name).ToArray();
        _outputs = outputs.Select(o => o.Value).ToArray();
    }

    /// <summary>One attention call.</summary>
    public void Run() => _session.Run(_runOptions, _inputNames, _inputs, _outputNames, _outputs);

    public void Dispose()
    {
        foreach (var v in _inputs) v.Dispose();
        foreach (var v in _outputs) v.Dispose();
        _runOptions.Dispose();
        _session.Dispose();
    }

    private static OrtValue Tensor(float[] data, params long[] shape) => OrtValue.CreateTensorValueFromMemory(data, shape);
}
