// A minimal reader of the ONNX protobuf (ModelProto -> GraphProto -> nodes, initializers, inputs, outputs):
// enough to take the weights out of an exported transformer and follow which node uses which tensor.
using System.Runtime.InteropServices;
using Google.Protobuf;

namespace FastAttention.Analysis.Model;

/// <summary>A tensor of an ONNX graph (an initializer or a Constant node's value), decoded to fp32 or int64.</summary>
/// <param name="Name">Tensor name in the graph.</param>
/// <param name="Dims">Shape.</param>
/// <param name="DataType">ONNX <c>TensorProto.DataType</c> (1 = float, 6 = int32, 7 = int64).</param>
/// <param name="Floats">Values when the type is float (row-major), else empty.</param>
/// <param name="Int64s">Values when the type is int32/int64, else empty.</param>
public sealed record OnnxTensor(string Name, long[] Dims, int DataType, float[] Floats, long[] Int64s)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Dims.Aggregate(1L, (a, d) => a * d);
}

/// <summary>A node of an ONNX graph.</summary>
/// <param name="Name">Node name.</param>
/// <param name="OpType">Operator, e.g. <c>MatMul</c>.</param>
/// <param name="Domain">Operator domain ("" = ai.onnx).</param>
/// <param name="Inputs">Input value names.</param>
/// <param name="Outputs">Output value names.</param>
/// <param name="Tensors">Tensor-valued attributes (e.g. a Constant's <c>value</c>).</param>
/// <param name="Ints">Integer attributes.</param>
/// <param name="Floats">Float attributes.</param>
public sealed record OnnxNode(string Name, string OpType, string Domain, string[] Inputs, string[] Outputs,
    IReadOnlyDictionary<string, OnnxTensor> Tensors, IReadOnlyDictionary<string, long> Ints, IReadOnlyDictionary<string, float> Floats);

/// <summary>
/// The parts of an ONNX model a weight loader needs: nodes in graph order, initializers by name, and the graph's
/// input and output names. Parsed with Google.Protobuf's <see cref="CodedInputStream"/> from the field numbers of
/// <c>onnx.proto</c>; unknown fields are skipped. External data (tensors stored outside the file) is not supported.
/// </summary>
public sealed class OnnxModel
{
    private OnnxModel(List<OnnxNode> nodes, Dictionary<string, OnnxTensor> initializers, List<string> inputs, List<string> outputs)
    {
        Nodes = nodes;
        Initializers = initializers;
        Inputs = inputs;
        Outputs = outputs;
    }

    /// <summary>Nodes in graph (topological) order.</summary>
    public IReadOnlyList<OnnxNode> Nodes { get; }
    /// <summary>Initializers (weights) by name.</summary>
    public IReadOnlyDictionary<string, OnnxTensor> Initializers { get; }
    /// <summary>Graph input names (initializers excluded).</summary>
    public IReadOnlyList<string> Inputs { get; }
    /// <summary>Graph output names.</summary>
    public IReadOnlyList<string> Outputs { get; }

    /// <summary>Parses a serialized <c>ModelProto</c>.</summary>
    /// <exception cref="InvalidDataException">The bytes are not an ONNX model with a graph, or a tensor is malformed.</exception>
    public static OnnxModel Parse(ReadOnlySpan<byte> bytes)
    {
        ByteString? graph = null;
        var input = new CodedInputStream(bytes.ToArray());
        try
        {
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                if (WireFormat.GetTagFieldNumber(tag) == 7 && WireFormat.GetTagWireType(tag) == WireFormat.WireType.LengthDelimited) graph = input.ReadBytes();
                else input.SkipLastField();
            }
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException("Not an ONNX model: " + e.Message, e);
        }
        if (graph is null) throw new InvalidDataException("The ONNX model has no graph (field 7).");
        var nodes = new List<OnnxNode>();
        var initializers = new Dictionary<string, OnnxTensor>(StringComparer.Ordinal);
        var inputs = new List<string>();
        var outputs = new List<string>();
        var g = graph.CreateCodedInput();
        uint t;
        while ((t = g.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(t))
            {
                case 1: nodes.Add(ParseNode(g.ReadBytes())); break;
                case 5: { var tensor = ParseTensor(g.ReadBytes()); initializers[tensor.Name] = tensor; break; }
                case 11: inputs.Add(ParseValueInfoName(g.ReadBytes())); break;
                case 12: outputs.Add(ParseValueInfoName(g.ReadBytes())); break;
                default: g.SkipLastField(); break;
            }
        }
        inputs.RemoveAll(initializers.ContainsKey);
        return new OnnxModel(nodes, initializers, inputs, outputs);
    }

    private static string ParseValueInfoName(ByteString bytes)
    {
        var s = bytes.CreateCodedInput();
        uint t;
        string name = "";
        while ((t = s.ReadTag()) != 0)
        {
            if (WireFormat.GetTagFieldNumber(t) == 1) name = s.ReadString();
            else s.SkipLastField();
        }
        return name;
    }

    private static OnnxNode ParseNode(ByteString bytes)
    {
        var s = bytes.CreateCodedInput();
        string name = "", op = "", domain = "";
        var inputs = new List<string>();
        var outputs = new List<string>();
        var tensors = new Dictionary<string, OnnxTensor>();
        var ints = new Dictionary<string, long>();
        var floats = new Dictionary<string, float>();
        uint t;
        while ((t = s.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(t))
            {
                case 1: inputs.Add(s.ReadString()); break;
                case 2: outputs.Add(s.ReadString()); break;
                case 3: name = s.ReadString(); break;
                case 4: op = s.ReadString(); break;
                case 7: domain = s.ReadString(); break;
                case 5: ParseAttribute(s.ReadBytes(), tensors, ints, floats); break;
                default: s.SkipLastField(); break;
            }
        }
        return new OnnxNode(name, op, domain, [.. inputs], [.. outputs], tensors, ints, floats);
    }

    private static void ParseAttribute(ByteString bytes, Dictionary<string, OnnxTensor> tensors, Dictionary<string, long> ints, Dictionary<string, float> floats)
    {
        var s = bytes.CreateCodedInput();
        string name = "";
        OnnxTensor? tensor = null;
        long? i = null;
        float? f = null;
        uint t;
        while ((t = s.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(t))
            {
                case 1: name = s.ReadString(); break;
                case 2: f = s.ReadFloat(); break;
                case 3: i = s.ReadInt64(); break;
                case 5: tensor = ParseTensor(s.ReadBytes()); break;
                default: s.SkipLastField(); break;
            }
        }
        if (tensor is not null) tensors[name] = tensor;
        if (i is { } iv) ints[name] = iv;
        if (f is { } fv) floats[name] = fv;
    }

    private static OnnxTensor ParseTensor(ByteString bytes)
    {
        var s = bytes.CreateCodedInput();
        var dims = new List<long>();
        var floatData = new List<float>();
        var intData = new List<long>();
        int dataType = 0;
        string name = "";
        ByteString? raw = null;
        bool external = false;
        uint t;
        while ((t = s.ReadTag()) != 0)
        {
            int field = WireFormat.GetTagFieldNumber(t);
            bool packed = WireFormat.GetTagWireType(t) == WireFormat.WireType.LengthDelimited;
            switch (field)
            {
                case 1: ReadRepeated(s, packed, dims, c => c.ReadInt64()); break;
                case 2: dataType = s.ReadInt32(); break;
                case 4: ReadRepeated(s, packed, floatData, c => c.ReadFloat()); break;
                case 5: ReadRepeated(s, packed, intData, c => (long)c.ReadInt32()); break;
                case 7: ReadRepeated(s, packed, intData, c => c.ReadInt64()); break;
                case 8: name = s.ReadString(); break;
                case 9: raw = s.ReadBytes(); break;
                case 14: external = s.ReadInt32() == 1; break;
                default: s.SkipLastField(); break;
            }
        }
        if (external) throw new InvalidDataException($"Tensor '{name}' keeps its data outside the model file (not supported).");
        long count = dims.Aggregate(1L, (a, d) => a * d);
        float[] floats = [];
        long[] int64s = [];
        switch (dataType)
        {
            case 1:
                floats = raw is not null ? MemoryMarshal.Cast<byte, float>(raw.Span).ToArray() : [.. floatData];
                if (floats.Length != count) throw new InvalidDataException($"Tensor '{name}': {floats.Length} floats for shape [{string.Join(", ", dims)}].");
                break;
            case 6:
                int64s = raw is not null ? [.. MemoryMarshal.Cast<byte, int>(raw.Span).ToArray().Select(v => (long)v)] : [.. intData];
                break;
            case 7:
                int64s = raw is not null ? MemoryMarshal.Cast<byte, long>(raw.Span).ToArray() : [.. intData];
                break;
        }
        return new OnnxTensor(name, [.. dims], dataType, floats, int64s);
    }

    // Repeated scalars come packed (one length-delimited run) or one per tag.
    private static void ReadRepeated<T>(CodedInputStream s, bool packed, List<T> into, Func<CodedInputStream, T> readOne)
    {
        if (!packed)
        {
            into.Add(readOne(s));
            return;
        }
        var run = s.ReadBytes().CreateCodedInput();
        while (!run.IsAtEnd) into.Add(readOne(run));
    }
}
