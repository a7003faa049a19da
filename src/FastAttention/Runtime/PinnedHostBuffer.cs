// Page-locked host memory (cuMemHostAlloc): the host side of truly asynchronous copies.
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>
/// <see cref="Length"/> elements of page-locked host memory. Copies between it and a <see cref="DeviceBuffer{T}"/>
/// can run asynchronously on a stream; do not touch <see cref="Span"/>, dispose the buffer or drop the last reference
/// to it until such a copy has completed.
/// </summary>
/// <typeparam name="T">An unmanaged element type.</typeparam>
public sealed unsafe class PinnedHostBuffer<T> : IDisposable where T : unmanaged
{
    private readonly CudaResourceHandle _handle;

    private PinnedHostBuffer(CudaContext context, CudaResourceHandle handle, int length)
    {
        Context = context;
        _handle = handle;
        Length = length;
    }

    /// <summary>The context that allocated the memory (it is portable: every context can copy from it).</summary>
    public CudaContext Context { get; }

    /// <summary>Number of elements.</summary>
    public int Length { get; }

    /// <summary>The host address of element 0.</summary>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public nint HostPointer => _handle.Get(this);

    /// <summary>The memory as a span.</summary>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public Span<T> Span => new((void*)HostPointer, Length);

    /// <summary>Allocates <paramref name="length"/> pinned elements (zero-filled).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CudaException">The allocation failed.</exception>
    public static PinnedHostBuffer<T> Allocate(CudaContext context, int length)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        nuint bytes = Math.Max(DeviceBuffer<T>.ByteCount(length, nameof(length)), (nuint)sizeof(T));
        var handle = context.Own(CudaResourceKind.PinnedHostMemory, () =>
        {
            NativeStatus.Check(CudaDriver.cuMemHostAlloc(out nint pointer, bytes, CudaDriver.MemHostAllocPortable));
            return pointer;
        });
        var buffer = new PinnedHostBuffer<T>(context, handle, length);
        buffer.Span.Clear();
        return buffer;
    }

    /// <summary>Frees the memory. Make sure no queued copy still uses it.</summary>
    public void Dispose() => _handle.Dispose();
}
