// TEMPORARY: replaced by the real engine in this session.
using System.Numerics.Tensors;
namespace FastAttention.Cpu.Engine;
internal readonly record struct FlashArgs(AttentionShape Shape, float Scale, AttentionMask Mask, int Parallelism);
internal static class FlashEngine
{
    public static void Run<T>(FlashArgs a, ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, TensorSpan<T> o,
        TensorSpan<float> lse, bool wantLse, TensorSpan<float> probs, bool wantProbs) => throw new NotImplementedException();
}
internal static class FusedSoftmax
{
    public static void Run<T>(AttentionShape s, float scale, AttentionMask m, int par, ReadOnlyTensorSpan<T> x, TensorSpan<T> y) => throw new NotImplementedException();
}
