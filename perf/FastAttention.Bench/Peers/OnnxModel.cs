// One-node ONNX models encoded in code: the handful of onnx.proto fields a single-operator graph needs,
// written with Google.Protobuf's CodedOutputStream (no generated classes, so the build needs no protoc).
using Google.Protobuf;

namespace FastAttention.Bench.Peers;

/// <summary>ONNX tensor element types (onnx.proto TensorProto.DataType) used here.</summary>
internal enum OnnxElementType
{
    Float = 1,
    Int32 = 6,
    Float16 = 10,
}

/// <summary>A graph input or output: name, element type and dimensions (a string = symbolic, an int = fixed).</summary>
internal sealed record OnnxValue(string Name, OnnxElementType Type, params object[] Dims);

/// <summary>A node attribute: an int64 or a float.</summary>
internal sealed record OnnxAttribute(string Name, long? Int = null, float? Float = null);

/// <summary>
/// Encodes a ModelProto holding one node. Field numbers are onnx.proto's (ONNX IR version 8):
/// ModelProto{ir_version=1, producer_name=2, graph=7, opset_import=8}, OperatorSetIdProto{domain=1, version=2},
/// GraphProto{node=1, name=2, input=11, output=12}, NodeProto{input=1, output=2, name=3, op_type=4, attribute=5, domain=7},
/// AttributeProto{name=1, f=2, i=3, type=20 (FLOAT=1, INT=2)}, ValueInfoProto{name=1, type=2},
/// TypeProto{tensor_type=1}, TypeProto.Tensor{elem_type=1, shape=2}, TensorShapeProto{dim=1},
/// Dimension{dim_value=1, dim_param=2}.
/// </summary>
internal static class OnnxModel
{
    public const long IrVersion = 8;

    /// <summary>
    /// A model with one node <paramref name="opType"/> of <paramref name="domain"/> ("" = ai.onnx);
    /// node inputs are <paramref name="inputs"/> by name, where an empty name is an omitted optional input.
    /// </summary>
    public static byte[] SingleNode(string opType, string domain, IReadOnlyList<OnnxValue?> inputs, IReadOnlyList<OnnxValue> outputs,
        IReadOnlyList<OnnxAttribute> attributes, long defaultOpset = 17, long domainOpset = 1)
    {
        byte[] node = Message(w =>
        {
            foreach (var input in inputs) w.WriteString(1, input?.Name ?? "");
            foreach (var output in outputs) w.WriteString(2, output.Name);
            w.WriteString(3, opType + "_0");
            w.WriteString(4, opType);
            foreach (var a in attributes) w.WriteMessage(5, Attribute(a));
            if (domain.Length > 0) w.WriteString(7, domain);
        });
        byte[] graph = Message(w =>
        {
            w.WriteMessage(1, node);
            w.WriteString(2, opType + "_graph");
            foreach (var input in inputs) if (input is not null) w.WriteMessage(11, ValueInfo(input));
            foreach (var output in outputs) w.WriteMessage(12, ValueInfo(output));
        });
        return Message(w =>
        {
            w.WriteInt64(1, IrVersion);
            w.WriteString(2, "FastAttention.Bench");
            w.WriteMessage(7, graph);
            w.WriteMessage(8, Message(o => { o.WriteString(1, ""); o.WriteInt64(2, defaultOpset); }));
            if (domain.Length > 0) w.WriteMessage(8, Message(o => { o.WriteString(1, domain); o.WriteInt64(2, domainOpset); }));
        });
    }

    private static byte[] Attribute(OnnxAttribute a) => Message(w =>
    {
        w.WriteString(1, a.Name);
        if (a.Float is { } f)
        {
            w.WriteFloat(2, f);
            w.WriteInt64(20, 1);
        }
        else
        {
            w.WriteInt64(3, a.Int ?? throw new ArgumentException($"attribute {a.Name} has no value"));
            w.WriteInt64(20, 2);
        }
    });

    private static byte[] ValueInfo(OnnxValue v)
    {
        byte[] shape = Message(w =>
        {
            foreach (object d in v.Dims)
            {
                w.WriteMessage(1, Message(dim =>
                {
                    switch (d)
                    {
                        case string name: dim.WriteString(2, name); break;
                        case int n: dim.WriteInt64(1, n); break;
                        case long n: dim.WriteInt64(1, n); break;
                        default: throw new ArgumentException($"dimension {d} of {v.Name} is neither a name nor a number");
                    }
                }));
            }
        });
        byte[] tensor = Message(w =>
        {
            w.WriteInt64(1, (long)v.Type);
            w.WriteMessage(2, shape);
        });
        return Message(w =>
        {
            w.WriteString(1, v.Name);
            w.WriteMessage(2, Message(t => t.WriteMessage(1, tensor)));
        });
    }

    private static byte[] Message(Action<Writer> body)
    {
        using var stream = new MemoryStream();
        using (var output = new CodedOutputStream(stream, leaveOpen: true))
        {
            body(new Writer(output));
            output.Flush();
        }
        return stream.ToArray();
    }

    /// <summary>Tag-and-value helpers over a CodedOutputStream.</summary>
    private readonly struct Writer(CodedOutputStream output)
    {
        public void WriteString(int field, string value)
        {
            output.WriteTag(field, WireFormat.WireType.LengthDelimited);
            output.WriteString(value);
        }

        public void WriteInt64(int field, long value)
        {
            output.WriteTag(field, WireFormat.WireType.Varint);
            output.WriteInt64(value);
        }

        public void WriteFloat(int field, float value)
        {
            output.WriteTag(field, WireFormat.WireType.Fixed32);
            output.WriteFloat(value);
        }

        public void WriteMessage(int field, byte[] message)
        {
            output.WriteTag(field, WireFormat.WireType.LengthDelimited);
            output.WriteBytes(ByteString.CopyFrom(message));
        }
    }
}
