// A strided view of device memory (lengths and element strides, BSHD by default), owning or wrapping the memory.
namespace FastAttention.Runtime;

/// <summary>
/// A tensor in device memory: a <see cref="DeviceBuffer{T}"/> plus lengths and element strides. Attention
/// activations are <c>[batch, seq, heads, headDim]</c> (BSHD); explicit strides let a <c>[B, H, S, D]</c>
/// buffer be passed without a copy (<see cref="WrapBhsdAsBshd"/>). A tensor either owns its memory
/// (<see cref="Allocate"/>) or wraps a raw device pointer that another library owns (<see cref="Wrap"/>).
/// </summary>
/// <typeparam name="T">An unmanaged element type.</typeparam>
public sealed class DeviceTensor<T> : IDisposable where T : unmanaged
{
    private readonly nint[] _lengths;
    private readonly nint[] _strides;

    private DeviceTensor(DeviceBuffer<T> buffer, nint[] lengths, nint[] strides)
    {
        Buffer = buffer;
        _lengths = lengths;
        _strides = strides;
        long count = 1;
        foreach (nint n in lengths) count *= n;
        ElementCount = count;
    }

    /// <summary>The memory under the tensor (owning or wrapping).</summary>
    public DeviceBuffer<T> Buffer { get; }

    /// <summary>The context.</summary>
    public CudaContext Context => Buffer.Context;

    /// <summary>Device address of element [0, 0, ...].</summary>
    /// <exception cref="ObjectDisposedException">The memory was disposed.</exception>
    public nint DevicePointer => Buffer.DevicePointer;

    /// <summary>True when disposing frees the memory.</summary>
    public bool OwnsMemory => Buffer.OwnsMemory;

    /// <summary>Number of dimensions.</summary>
    public int Rank => _lengths.Length;

    /// <summary>Length of each dimension.</summary>
    public ReadOnlySpan<nint> Lengths => _lengths;

    /// <summary>Stride of each dimension, in elements.</summary>
    public ReadOnlySpan<nint> Strides => _strides;

    /// <summary>Product of the lengths.</summary>
    public long ElementCount { get; }

    /// <summary>True when the strides are the row-major (C-order) strides of the lengths.</summary>
    public bool IsContiguous
    {
        get
        {
            long expected = 1;
            for (int i = Rank - 1; i >= 0; i--)
            {
                if (_lengths[i] != 1 && _strides[i] != expected) return false;
                expected *= _lengths[i];
            }
            return true;
        }
    }

    /// <summary>Allocates a contiguous tensor with the given lengths.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentException">A length is negative, or there are no dimensions.</exception>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CudaException">The allocation failed.</exception>
    public static DeviceTensor<T> Allocate(CudaContext context, params ReadOnlySpan<nint> lengths)
    {
        ArgumentNullException.ThrowIfNull(context);
        nint[] l = CheckLengths(lengths);
        nint[] s = ContiguousStrides(l);
        return new DeviceTensor<T>(DeviceBuffer<T>.Allocate(context, Product(l)), l, s);
    }

    /// <summary>Allocates a contiguous <c>[batch, seq, heads, headDim]</c> tensor.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentException">A size is negative.</exception>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CudaException">The allocation failed.</exception>
    public static DeviceTensor<T> AllocateBshd(CudaContext context, int batch, int seq, int heads, int headDim) =>
        Allocate(context, batch, seq, heads, headDim);

    /// <summary>
    /// Wraps device memory at <paramref name="devicePointer"/> with the given lengths and element strides,
    /// without taking ownership. The caller keeps the memory alive while the tensor is used.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentException">
    /// Ranks differ, a length or stride is negative, or the pointer is 0 or misaligned while the tensor is not empty.
    /// </exception>
    public static DeviceTensor<T> Wrap(CudaContext context, nint devicePointer, ReadOnlySpan<nint> lengths, ReadOnlySpan<nint> strides)
    {
        ArgumentNullException.ThrowIfNull(context);
        nint[] l = CheckLengths(lengths);
        if (strides.Length != l.Length)
        {
            throw new ArgumentException($"strides has {strides.Length} entries but lengths has {l.Length}.", nameof(strides));
        }
        long extent = 1;
        for (int i = 0; i < l.Length; i++)
        {
            if (strides[i] < 0)
            {
                throw new ArgumentException($"strides[{i}] = {strides[i]} is negative.", nameof(strides));
            }
            if (l[i] == 0) extent = 0;
        }
        if (extent != 0)
        {
            for (int i = 0; i < l.Length; i++) extent += (long)(l[i] - 1) * strides[i];
        }
        return new DeviceTensor<T>(DeviceBuffer<T>.Wrap(context, devicePointer, extent), l, strides.ToArray());
    }

    /// <summary>Wraps a contiguous <c>[batch, seq, heads, headDim]</c> tensor at <paramref name="devicePointer"/> (not owned).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentException">A size is negative, or the pointer is 0 or misaligned while the tensor is not empty.</exception>
    public static DeviceTensor<T> WrapBshd(CudaContext context, nint devicePointer, int batch, int seq, int heads, int headDim)
    {
        nint[] l = [batch, seq, heads, headDim];
        return Wrap(context, devicePointer, l, ContiguousStrides(CheckLengths(l)));
    }

    /// <summary>
    /// Wraps memory laid out <c>[batch, heads, seq, headDim]</c> (PyTorch's attention layout) as a
    /// <c>[batch, seq, heads, headDim]</c> view, without copying (not owned).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentException">A size is negative, or the pointer is 0 or misaligned while the tensor is not empty.</exception>
    public static DeviceTensor<T> WrapBhsdAsBshd(CudaContext context, nint devicePointer, int batch, int seq, int heads, int headDim)
    {
        nint[] l = CheckLengths([batch, seq, heads, headDim]);
        nint[] s = [(nint)heads * seq * headDim, headDim, (nint)seq * headDim, 1];
        return Wrap(context, devicePointer, l, s);
    }

    /// <summary>Copies <paramref name="source"/> (row-major, <see cref="ElementCount"/> elements) into a contiguous tensor.</summary>
    /// <exception cref="InvalidOperationException">The tensor is not contiguous.</exception>
    /// <exception cref="ArgumentException"><paramref name="source"/> has a different element count.</exception>
    /// <exception cref="ObjectDisposedException">The memory or the context was disposed.</exception>
    /// <exception cref="CudaException">The copy failed.</exception>
    public void CopyFrom(ReadOnlySpan<T> source)
    {
        RequireContiguous(source.Length, nameof(source));
        Buffer.CopyFrom(source);
    }

    /// <summary>Copies a contiguous tensor into <paramref name="destination"/> (row-major).</summary>
    /// <exception cref="InvalidOperationException">The tensor is not contiguous.</exception>
    /// <exception cref="ArgumentException"><paramref name="destination"/> has a different element count.</exception>
    /// <exception cref="ObjectDisposedException">The memory or the context was disposed.</exception>
    /// <exception cref="CudaException">The copy failed.</exception>
    public void CopyTo(Span<T> destination)
    {
        RequireContiguous(destination.Length, nameof(destination));
        Buffer.CopyTo(destination);
    }

    /// <summary>Frees owned memory; a wrapped tensor is only marked unusable.</summary>
    public void Dispose() => Buffer.Dispose();

    /// <summary>"[2, 128, 8, 64] strides [65536, 512, 64, 1]".</summary>
    public override string ToString() => $"[{string.Join(", ", _lengths)}] strides [{string.Join(", ", _strides)}]";

    private void RequireContiguous(int count, string paramName)
    {
        if (!IsContiguous)
        {
            throw new InvalidOperationException($"Tensor {this} is not contiguous; copy through a contiguous tensor.");
        }
        if (count != ElementCount)
        {
            throw new ArgumentException($"{paramName} has {count} elements; the tensor has {ElementCount}.", paramName);
        }
    }

    private static nint[] CheckLengths(ReadOnlySpan<nint> lengths)
    {
        if (lengths.IsEmpty)
        {
            throw new ArgumentException("A tensor needs at least one dimension.", nameof(lengths));
        }
        for (int i = 0; i < lengths.Length; i++)
        {
            if (lengths[i] < 0)
            {
                throw new ArgumentException($"lengths[{i}] = {lengths[i]} is negative.", nameof(lengths));
            }
        }
        return lengths.ToArray();
    }

    private static nint[] ContiguousStrides(nint[] lengths)
    {
        var strides = new nint[lengths.Length];
        nint stride = 1;
        for (int i = lengths.Length - 1; i >= 0; i--)
        {
            strides[i] = stride;
            stride *= Math.Max(lengths[i], 1);
        }
        return strides;
    }

    private static long Product(nint[] lengths)
    {
        long product = 1;
        foreach (nint n in lengths)
        {
            if (n != 0 && product > long.MaxValue / n)
            {
                throw new ArgumentException($"lengths [{string.Join(", ", lengths)}] have more elements than a 64-bit count holds.", nameof(lengths));
            }
            product *= n;
        }
        return product;
    }
}
