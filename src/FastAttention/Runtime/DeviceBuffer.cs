// Typed device memory that owns its allocation or wraps a raw device pointer; sync and async copies with element counts.
using System.Runtime.CompilerServices;
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>
/// <see cref="Length"/> elements of <typeparamref name="T"/> in device memory. It either owns the allocation
/// (<see cref="Allocate"/>, freed by <see cref="Dispose"/>) or wraps memory someone else owns
/// (<see cref="Wrap"/>, <see cref="Slice"/>). Every offset and count in this API is in elements, never bytes.
/// </summary>
/// <remarks>
/// Methods without a stream run on the legacy default stream and have finished when they return. They do not
/// wait for work queued on non-blocking streams (the default of <see cref="CudaStream.Create"/>): synchronize such
/// a stream before a synchronous method touches memory its queued work uses, or use the methods that take the stream.
/// </remarks>
/// <typeparam name="T">An unmanaged element type.</typeparam>
public sealed unsafe class DeviceBuffer<T> : IDisposable where T : unmanaged
{
    private readonly CudaResourceHandle? _owned;
    private readonly nint _pointer;
    private readonly DeviceBuffer<T>? _parent;
    private bool _disposed;

    private DeviceBuffer(CudaContext context, nint pointer, long length, CudaResourceHandle? owned, DeviceBuffer<T>? parent)
    {
        Context = context;
        _pointer = pointer;
        Length = length;
        _owned = owned;
        _parent = parent;
    }

    /// <summary>The context the memory belongs to.</summary>
    public CudaContext Context { get; }

    /// <summary>Number of elements.</summary>
    public long Length { get; }

    /// <summary>Size in bytes (<see cref="Length"/> × sizeof(T)).</summary>
    public long SizeInBytes => Length * sizeof(T);

    /// <summary>True when disposing frees the memory.</summary>
    public bool OwnsMemory => _owned is not null;

    /// <summary>The raw device address of element 0.</summary>
    /// <exception cref="ObjectDisposedException">The buffer (or the buffer it is a slice of) was disposed.</exception>
    public nint DevicePointer
    {
        get
        {
            ThrowIfDisposed();
            return _pointer;
        }
    }

    /// <summary>Allocates <paramref name="length"/> elements (contents undefined; see <see cref="Clear"/>).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative or its byte size overflows.</exception>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CudaException">The allocation failed (e.g. CUDA_ERROR_OUT_OF_MEMORY).</exception>
    public static DeviceBuffer<T> Allocate(CudaContext context, long length)
    {
        ArgumentNullException.ThrowIfNull(context);
        nuint bytes = ByteCount(length, nameof(length));
        // cuMemAlloc rejects 0 bytes; a zero-length buffer still gets a real (1-element) allocation.
        nuint allocated = bytes == 0 ? (nuint)sizeof(T) : bytes;
        var handle = context.Own(CudaResourceKind.DeviceMemory, () =>
        {
            NativeStatus.Check(CudaDriver.cuMemAlloc_v2(out nint pointer, allocated));
            return pointer;
        });
        return new DeviceBuffer<T>(context, handle.DangerousGetHandle(), length, handle, null);
    }

    /// <summary>Allocates a buffer and copies <paramref name="source"/> into it.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CudaException">The allocation or the copy failed.</exception>
    public static DeviceBuffer<T> FromSpan(CudaContext context, ReadOnlySpan<T> source)
    {
        var buffer = Allocate(context, source.Length);
        try
        {
            buffer.CopyFrom(source);
            return buffer;
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Wraps <paramref name="length"/> elements at <paramref name="devicePointer"/> without taking ownership
    /// (memory from PyTorch, ONNX Runtime, ManagedCuda, ...). The caller keeps the memory alive while it is used.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="devicePointer"/> is 0 while <paramref name="length"/> is not, or it is not aligned to sizeof(T).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative or its byte size overflows.</exception>
    public static DeviceBuffer<T> Wrap(CudaContext context, nint devicePointer, long length)
    {
        ArgumentNullException.ThrowIfNull(context);
        ByteCount(length, nameof(length));
        if (devicePointer == 0 && length != 0)
        {
            throw new ArgumentException($"devicePointer is 0 but length is {length}.", nameof(devicePointer));
        }
        // The natural alignment of T: the largest power of two dividing its size, at most 16 bytes.
        int alignment = Math.Min(sizeof(T) & -sizeof(T), 16);
        if (devicePointer % alignment != 0)
        {
            throw new ArgumentException(
                $"devicePointer 0x{devicePointer:X} is not aligned to {alignment} bytes, as {typeof(T).Name} elements need.", nameof(devicePointer));
        }
        return new DeviceBuffer<T>(context, devicePointer, length, null, null);
    }

    /// <summary>A non-owning view of <paramref name="length"/> elements starting at element <paramref name="start"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the buffer.</exception>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public DeviceBuffer<T> Slice(long start, long length)
    {
        CheckRange(start, length, Length, nameof(start));
        return new DeviceBuffer<T>(Context, ElementAddress(start), length, null, this);
    }

    /// <summary>
    /// Copies host memory into the buffer at element <paramref name="destinationOffset"/>; returns when the data is in
    /// device memory, so work queued afterwards on any stream sees it.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The source does not fit at that offset.</exception>
    /// <exception cref="ObjectDisposedException">The buffer or its context was disposed.</exception>
    /// <exception cref="CudaException">The copy failed (also reports a failure of earlier asynchronous work).</exception>
    public void CopyFrom(ReadOnlySpan<T> source, long destinationOffset = 0)
    {
        fixed (T* p = source)
        {
            HostCopy(p, source.Length, destinationOffset, nameof(destinationOffset), toDevice: true, stream: null);
        }
    }

    /// <summary>
    /// Copies from element <paramref name="sourceOffset"/> into host memory; returns when the data has arrived. Work
    /// still queued on a non-blocking stream is not waited for: synchronize that stream first.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The destination is longer than what the buffer holds from that offset.</exception>
    /// <exception cref="ObjectDisposedException">The buffer or its context was disposed.</exception>
    /// <exception cref="CudaException">The copy failed (also reports a failure of earlier asynchronous work).</exception>
    public void CopyTo(Span<T> destination, long sourceOffset = 0)
    {
        fixed (T* p = destination)
        {
            HostCopy(p, destination.Length, sourceOffset, nameof(sourceOffset), toDevice: false, stream: null);
        }
    }

    /// <summary>The whole buffer as a new array (synchronous).</summary>
    /// <exception cref="InvalidOperationException">The buffer has more than <see cref="Array.MaxLength"/> elements.</exception>
    /// <exception cref="ObjectDisposedException">The buffer or its context was disposed.</exception>
    /// <exception cref="CudaException">The copy failed.</exception>
    public T[] ToArray()
    {
        if (Length > Array.MaxLength)
        {
            throw new InvalidOperationException($"The buffer has {Length} elements, more than an array can hold.");
        }
        var result = new T[Length];
        CopyTo(result);
        return result;
    }

    /// <summary>Queues a copy of all of <paramref name="source"/> (pinned) into the buffer at <paramref name="destinationOffset"/>.</summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">The stream or the pinned buffer belongs to another context.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The source does not fit at that offset.</exception>
    /// <exception cref="ObjectDisposedException">A buffer, the stream or the context was disposed.</exception>
    /// <exception cref="CudaException">The driver rejected the copy.</exception>
    public void CopyFromAsync(PinnedHostBuffer<T> source, CudaStream stream, long destinationOffset = 0)
    {
        ArgumentNullException.ThrowIfNull(source);
        CheckStream(stream);
        Context.RequireSame(source.Context, nameof(source));
        HostCopy((T*)source.HostPointer, source.Length, destinationOffset, nameof(destinationOffset), toDevice: true, stream);
        // The pinned memory must not be finalized (freed) before the copy is queued.
        GC.KeepAlive(source);
    }

    /// <summary>Queues a copy from element <paramref name="sourceOffset"/> into all of <paramref name="destination"/> (pinned).</summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">The stream or the pinned buffer belongs to another context.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The destination is longer than what the buffer holds from that offset.</exception>
    /// <exception cref="ObjectDisposedException">A buffer, the stream or the context was disposed.</exception>
    /// <exception cref="CudaException">The driver rejected the copy.</exception>
    public void CopyToAsync(PinnedHostBuffer<T> destination, CudaStream stream, long sourceOffset = 0)
    {
        ArgumentNullException.ThrowIfNull(destination);
        CheckStream(stream);
        Context.RequireSame(destination.Context, nameof(destination));
        HostCopy((T*)destination.HostPointer, destination.Length, sourceOffset, nameof(sourceOffset), toDevice: false, stream);
        // The pinned memory must not be finalized (freed) before the copy is queued.
        GC.KeepAlive(destination);
    }

    /// <summary>
    /// Copies all of <paramref name="source"/> (device) into this buffer at <paramref name="destinationOffset"/>.
    /// With a stream the copy is queued on it; without one it runs on the legacy default stream and has finished
    /// when this returns.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    /// <exception cref="ArgumentException">The source or the stream belongs to another context.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The source does not fit at that offset.</exception>
    /// <exception cref="ObjectDisposedException">A buffer, the stream or the context was disposed.</exception>
    /// <exception cref="CudaException">The driver rejected the copy.</exception>
    public void CopyFrom(DeviceBuffer<T> source, long destinationOffset = 0, CudaStream? stream = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        Context.RequireSame(source.Context, nameof(source));
        CheckRange(destinationOffset, source.Length, Length, nameof(destinationOffset));
        nint destination = ElementAddress(destinationOffset);
        nuint bytes = ByteCount(source.Length, nameof(source));
        if (stream is null)
        {
            Context.MakeCurrent();
            NativeStatus.Check(CudaDriver.cuMemcpyDtoD_v2(destination, source.DevicePointer, bytes));
            // A device-to-device cuMemcpy does not wait for the copy (CUDA driver API, "API synchronization behavior").
            WaitForLegacyStream();
        }
        else
        {
            CheckStream(stream);
            nint raw = stream.Bind();
            NativeStatus.Check(CudaDriver.cuMemcpyDtoDAsync_v2(destination, source.DevicePointer, bytes, raw));
        }
        GC.KeepAlive(source);
        GC.KeepAlive(this);
    }

    /// <summary>Sets every byte to 0 and returns when done (on the legacy default stream; <see cref="ClearAsync"/> queues it on a stream).</summary>
    /// <exception cref="ObjectDisposedException">The buffer or its context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed (also reports a failure of earlier asynchronous work).</exception>
    public void Clear()
    {
        nint pointer = DevicePointer;
        Context.MakeCurrent();
        NativeStatus.Check(CudaDriver.cuMemsetD8_v2(pointer, 0, ByteCount(Length, nameof(Length))));
        // cuMemsetD8 is asynchronous to the host for device memory, and non-blocking streams do not wait for it.
        WaitForLegacyStream();
        GC.KeepAlive(this);
    }

    /// <summary>Queues setting every byte to 0 on <paramref name="stream"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ArgumentException">The stream belongs to another context.</exception>
    /// <exception cref="ObjectDisposedException">The buffer, the stream or the context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed.</exception>
    public void ClearAsync(CudaStream stream)
    {
        CheckStream(stream);
        nint pointer = DevicePointer;
        nint raw = stream.Bind();
        NativeStatus.Check(CudaDriver.cuMemsetD8Async(pointer, 0, ByteCount(Length, nameof(Length)), raw));
        GC.KeepAlive(this);
    }

    /// <summary>
    /// Frees owned memory; a wrapped buffer or slice is only marked unusable. Work queued on a stream that still uses
    /// the memory must have finished (the driver documents only that cuMemFree <i>may</i> synchronise).
    /// </summary>
    public void Dispose()
    {
        _disposed = true;
        _owned?.Dispose();
    }

    private void ThrowIfDisposed()
    {
        for (DeviceBuffer<T>? b = this; b is not null; b = b._parent)
        {
            ObjectDisposedException.ThrowIf(b._disposed, this);
        }
    }

    private void CheckStream(CudaStream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Context.RequireSame(stream.Context, nameof(stream));
    }

    /// <summary>
    /// Copies <paramref name="count"/> elements between host memory and this buffer at element <paramref name="offset"/>:
    /// synchronously without a stream, queued on <paramref name="stream"/> otherwise (host memory must then be pinned).
    /// </summary>
    private void HostCopy(T* host, int count, long offset, string offsetName, bool toDevice, CudaStream? stream)
    {
        CheckRange(offset, count, Length, offsetName);
        nint device = ElementAddress(offset);
        nuint bytes = ByteCount(count, nameof(count));
        if (stream is null)
        {
            Context.MakeCurrent();
            if (toDevice)
            {
                NativeStatus.Check(CudaDriver.cuMemcpyHtoD_v2(device, host, bytes));
                // From pageable memory cuMemcpyHtoD returns once the data is staged, before the DMA to the device
                // has completed (CUDA driver API, "API synchronization behavior"); a kernel on a non-blocking stream
                // could read the old contents. Wait for the legacy stream so the data is really there.
                WaitForLegacyStream();
            }
            else
            {
                NativeStatus.Check(CudaDriver.cuMemcpyDtoH_v2(host, device, bytes));
            }
        }
        else
        {
            nint raw = stream.Bind();
            if (toDevice) NativeStatus.Check(CudaDriver.cuMemcpyHtoDAsync_v2(device, host, bytes, raw));
            else NativeStatus.Check(CudaDriver.cuMemcpyDtoHAsync_v2(host, device, bytes, raw));
        }
        GC.KeepAlive(this);
    }

    /// <summary>Waits for the legacy default stream, where the synchronous copies and memsets run (the context is current).</summary>
    private static void WaitForLegacyStream() =>
        NativeStatus.Check(CudaDriver.cuStreamSynchronize(CudaDriver.StreamLegacy), "cuStreamSynchronize(CU_STREAM_LEGACY)");

    private nint ElementAddress(long index) => DevicePointer + (nint)(index * sizeof(T));

    /// <summary>The byte size of <paramref name="elements"/> elements, checked for overflow.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nuint ByteCount(long elements, string paramName)
    {
        if (elements < 0 || elements > long.MaxValue / sizeof(T))
        {
            throw new ArgumentOutOfRangeException(paramName, elements, $"An element count must be in [0, {long.MaxValue / sizeof(T)}].");
        }
        return (nuint)(elements * sizeof(T));
    }

    /// <summary>Throws unless [offset, offset + count) lies in [0, length).</summary>
    internal static void CheckRange(long offset, long count, long length, string paramName)
    {
        if (offset < 0 || count < 0 || offset > length - count)
        {
            throw new ArgumentOutOfRangeException(paramName,
                $"Elements [{offset}, {offset} + {count}) are outside the buffer of {length} elements.");
        }
    }
}
