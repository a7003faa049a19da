// Weights of a multi-head attention module in host memory, in the layout and file format of the CPU module
// (FastAttention.Cpu.MultiHeadAttention): fused Wqkv rows [Q heads | K heads | V heads], Wo, optional biases.
using System.Runtime.InteropServices;

namespace FastAttention.Gpu;

/// <summary>fp32 weights of one module, checked against its config: <c>Wqkv [H·D + 2·Hkv·D, modelDim]</c>, <c>Wo [modelDim, H·D]</c>, biases (empty without).</summary>
internal sealed class MultiHeadWeights
{
    /// <summary>"FMH1", the magic number of the CPU module's weight files.</summary>
    public const uint FileMagic = 0x3148_4D46;

    private MultiHeadWeights(float[] fused, float[] fusedBias, float[] output, float[] outputBias) =>
        (Fused, FusedBias, Output, OutputBias) = (fused, fusedBias, output, outputBias);

    public float[] Fused { get; }
    public float[] FusedBias { get; }
    public float[] Output { get; }
    public float[] OutputBias { get; }

    /// <summary>Copies and checks the eight arrays of <c>SetWeights</c> (same rules and messages as the CPU module).</summary>
    /// <exception cref="ArgumentException">A weight or bias has the wrong length, or biases are given/missing against <see cref="AttentionConfig.Bias"/>.</exception>
    public static MultiHeadWeights FromParts(AttentionConfig config, ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value,
        ReadOnlySpan<float> output, ReadOnlySpan<float> queryBias, ReadOnlySpan<float> keyBias, ReadOnlySpan<float> valueBias, ReadOnlySpan<float> outputBias)
    {
        int model = config.ModelDim, qw = config.Heads * config.HeadDim, kw = config.KvHeads * config.HeadDim;
        RequireLength(query, qw * model, nameof(query), $"[H·D = {qw}, modelDim = {model}]");
        RequireLength(key, kw * model, nameof(key), $"[Hkv·D = {kw}, modelDim = {model}]");
        RequireLength(value, kw * model, nameof(value), $"[Hkv·D = {kw}, modelDim = {model}]");
        RequireLength(output, model * qw, nameof(output), $"[modelDim = {model}, H·D = {qw}]");
        int biasLength = config.Bias ? 1 : 0;
        string none = "empty (config has no bias)";
        RequireLength(queryBias, biasLength * qw, nameof(queryBias), config.Bias ? $"[{qw}]" : none);
        RequireLength(keyBias, biasLength * kw, nameof(keyBias), config.Bias ? $"[{kw}]" : none);
        RequireLength(valueBias, biasLength * kw, nameof(valueBias), config.Bias ? $"[{kw}]" : none);
        RequireLength(outputBias, biasLength * model, nameof(outputBias), config.Bias ? $"[{model}]" : none);
        float[] fused = [.. query, .. key, .. value];
        float[] fusedBias = [.. queryBias, .. keyBias, .. valueBias];
        return new MultiHeadWeights(fused, fusedBias, output.ToArray(), outputBias.ToArray());
    }

    /// <summary>
    /// Reads a weight file of the CPU module's <c>SaveWeights</c>: magic, then int32 modelDim, H, Hkv, D, bias flag, then
    /// fp32 little-endian Wqkv, Wo and (with biases) bqkv, bo.
    /// </summary>
    /// <exception cref="InvalidDataException">Not a weight file, shapes that differ from <paramref name="config"/> (message has both), or a file that ends early.</exception>
    public static MultiHeadWeights Read(AttentionConfig config, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        int model = config.ModelDim, qw = config.Heads * config.HeadDim, kw = config.KvHeads * config.HeadDim;
        using var reader = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        try
        {
            if (reader.ReadUInt32() != FileMagic) throw new InvalidDataException("Not a FastAttention multi-head attention weight file (bad magic).");
            int[] expected = [model, config.Heads, config.KvHeads, config.HeadDim, config.Bias ? 1 : 0];
            int[] found = new int[expected.Length];
            for (int i = 0; i < found.Length; i++) found[i] = reader.ReadInt32();
            if (!found.AsSpan().SequenceEqual(expected))
            {
                throw new InvalidDataException(
                    $"Weight file shapes (modelDim, H, Hkv, D, bias) = ({string.Join(", ", found)}) differ from the module's ({string.Join(", ", expected)}).");
            }
            int biasLength = config.Bias ? 1 : 0;
            float[] fused = ReadArray(stream, (qw + 2 * kw) * model);
            float[] output = ReadArray(stream, model * qw);
            float[] fusedBias = ReadArray(stream, biasLength * (qw + 2 * kw));
            float[] outputBias = ReadArray(stream, biasLength * model);
            return new MultiHeadWeights(fused, fusedBias, output, outputBias);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("The weight file ends early.", e);
        }
    }

    private static float[] ReadArray(Stream stream, int length)
    {
        var array = new float[length];
        stream.ReadExactly(MemoryMarshal.AsBytes(array.AsSpan()));
        if (!BitConverter.IsLittleEndian)
        {
            var ints = MemoryMarshal.Cast<float, int>(array.AsSpan());
            System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(ints, ints);
        }
        return array;
    }

    private static void RequireLength(ReadOnlySpan<float> span, int expected, string name, string layout)
    {
        if (span.Length != expected)
        {
            throw new ArgumentException($"{name} has {span.Length} elements; expected {expected} ({layout}).", name);
        }
    }
}
