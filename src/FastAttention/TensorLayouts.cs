// Views that let [B, H, S, D] memory be passed where [B, S, H, D] is expected, without a copy.
using System.Numerics.Tensors;

namespace FastAttention;

/// <summary>Helpers to build the BSHD tensor views the attention entry points take.</summary>
public static class TensorLayouts
{
    /// <summary>A contiguous <c>[B, S, H, D]</c> view of <paramref name="data"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="data"/> is shorter than B·S·H·D.</exception>
    public static TensorSpan<T> Bshd<T>(Span<T> data, int batch, int seq, int heads, int headDim) =>
        View(Fit(data, batch, seq, heads, headDim), [batch, seq, heads, headDim],
            [(nint)seq * heads * headDim, (nint)heads * headDim, headDim, 1]);

    /// <summary>
    /// A <c>[B, S, H, D]</c> view of memory laid out <c>[B, H, S, D]</c> (as PyTorch's default
    /// attention layout), without copying.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="data"/> is shorter than B·H·S·D.</exception>
    public static TensorSpan<T> BhsdAsBshd<T>(Span<T> data, int batch, int seq, int heads, int headDim) =>
        View(Fit(data, batch, seq, heads, headDim), [batch, seq, heads, headDim],
            [(nint)heads * seq * headDim, headDim, (nint)seq * headDim, 1]);

    /// <summary>A contiguous <c>[B, H, Sq]</c> view for log-sum-exp output.</summary>
    /// <exception cref="ArgumentException"><paramref name="data"/> is shorter than B·H·Sq.</exception>
    public static TensorSpan<float> Bhs(Span<float> data, int batch, int heads, int seq) =>
        View(Fit(data, batch, heads, seq, 1), [batch, heads, seq], [(nint)heads * seq, seq, 1]);

    /// <summary>
    /// A strided view. System.Numerics.Tensors 10 rejects a non-zero stride on a length-1 dimension
    /// (dotnet/runtime#117855), and such a stride is never used, so it is set to 0 here.
    /// </summary>
    /// <exception cref="ArgumentException">The lengths and strides reach outside <paramref name="data"/>.</exception>
    public static TensorSpan<T> View<T>(Span<T> data, scoped ReadOnlySpan<nint> lengths, scoped ReadOnlySpan<nint> strides)
    {
        Span<nint> fixedStrides = stackalloc nint[strides.Length];
        for (int i = 0; i < strides.Length; i++)
        {
            fixedStrides[i] = lengths[i] == 1 ? 0 : strides[i];
        }
        return new TensorSpan<T>(data, lengths, fixedStrides);
    }

    private static Span<T> Fit<T>(Span<T> data, int a, int b, int c, int d)
    {
        long needed = (long)a * b * c * d;
        if (data.Length < needed)
        {
            throw new ArgumentException($"data has {data.Length} elements; the view needs {a} x {b} x {c} x {d} = {needed}.", nameof(data));
        }
        return data[..(int)needed];
    }
}
