// The CPU engine behind IAttentionBackend: CpuGemm projections and CpuAttention forward.
using System.Numerics.Tensors;

namespace FastAttention.Cpu;

/// <summary>The CPU implementation of <see cref="IAttentionBackend"/>.</summary>
/// <param name="maxDegreeOfParallelism">Worker threads for projections; -1 = all processors (attention uses the options' value).</param>
public sealed class CpuBackend(int maxDegreeOfParallelism = -1) : IAttentionBackend
{
    /// <inheritdoc/>
    public string Name => "cpu";

    /// <inheritdoc/>
    public void Linear(ReadOnlyTensorSpan<float> input, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, TensorSpan<float> output) =>
        CpuGemm.Linear(input, weight, bias, output, maxDegreeOfParallelism);

    /// <inheritdoc/>
    public void Attention(ReadOnlyTensorSpan<float> query, ReadOnlyTensorSpan<float> key, ReadOnlyTensorSpan<float> value,
        TensorSpan<float> output, AttentionOptions options, TensorSpan<float> probabilities) =>
        CpuAttention.Forward(query, key, value, output, options, probabilities: probabilities);
}
