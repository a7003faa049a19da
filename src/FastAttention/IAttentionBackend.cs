// The operations a multi-head attention module needs from a compute backend.
using System.Numerics.Tensors;

namespace FastAttention;

/// <summary>
/// What <c>MultiHeadAttention</c> asks of a backend: projections and the attention forward, on fp32
/// tensors. The CPU engine implements it today; the CUDA backend plugs in behind the same interface.
/// </summary>
public interface IAttentionBackend
{
    /// <summary>Human-readable backend name (for logs and benchmark tables).</summary>
    string Name { get; }

    /// <summary><c>output = input · weightᵀ + bias</c>.</summary>
    /// <param name="input"><c>[..., in]</c>.</param>
    /// <param name="weight"><c>[out, in]</c>, row-major.</param>
    /// <param name="bias"><c>[out]</c>, or empty.</param>
    /// <param name="output"><c>[..., out]</c>, same leading lengths as <paramref name="input"/>.</param>
    /// <exception cref="ArgumentException">Shapes that do not agree.</exception>
    void Linear(ReadOnlyTensorSpan<float> input, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, TensorSpan<float> output);

    /// <summary>Attention forward with the semantics of <see cref="AttentionMask"/>.</summary>
    /// <param name="query">Q, <c>[B, Sq, H, D]</c>.</param>
    /// <param name="key">K, <c>[B, Sk, Hkv, D]</c>.</param>
    /// <param name="value">V, <c>[B, Sk, Hkv, D]</c>.</param>
    /// <param name="output">O, <c>[B, Sq, H, D]</c>.</param>
    /// <param name="options">Scale, mask, parallelism.</param>
    /// <param name="probabilities">Optional <c>[B, H, Sq, Sk]</c> attention weights; <c>default</c> to skip.</param>
    /// <exception cref="ArgumentException">Shapes, masks or destinations that do not agree.</exception>
    void Attention(ReadOnlyTensorSpan<float> query, ReadOnlyTensorSpan<float> key, ReadOnlyTensorSpan<float> value,
        TensorSpan<float> output, AttentionOptions options, TensorSpan<float> probabilities);
}
