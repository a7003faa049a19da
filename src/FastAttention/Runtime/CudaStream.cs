// CUDA streams: owned (created here) or wrapped (a stream another library made), ordered async work, no hidden syncs.
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>
/// A CUDA stream. Work queued on it (copies, kernel launches, GEMMs) runs in order and asynchronously to the
/// host; nothing here waits unless a method says it does (<see cref="Synchronize"/>).
/// </summary>
public sealed class CudaStream : IDisposable
{
    private readonly CudaResourceHandle? _owned;
    private readonly nint _wrapped;
    private bool _disposed;

    private CudaStream(CudaContext context, CudaResourceHandle? owned, nint wrapped)
    {
        Context = context;
        _owned = owned;
        _wrapped = wrapped;
    }

    /// <summary>The context the stream belongs to.</summary>
    public CudaContext Context { get; }

    /// <summary>True when disposing destroys the stream (it was created here).</summary>
    public bool OwnsHandle => _owned is not null;

    /// <summary>The raw <c>CUstream</c> (0 is the legacy default stream).</summary>
    /// <exception cref="ObjectDisposedException">The stream was disposed.</exception>
    public nint Handle
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _owned?.DangerousGetHandle() ?? _wrapped;
        }
    }

    /// <summary>Creates a stream.</summary>
    /// <param name="context">The context.</param>
    /// <param name="nonBlocking">True (default): the stream does not synchronise with the legacy default stream.</param>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed.</exception>
    public static CudaStream Create(CudaContext context, bool nonBlocking = true)
    {
        ArgumentNullException.ThrowIfNull(context);
        uint flags = nonBlocking ? CudaDriver.StreamNonBlocking : 0;
        var handle = context.Own(CudaResourceKind.Stream, () =>
        {
            NativeStatus.Check(CudaDriver.cuStreamCreate(out nint stream, flags));
            return stream;
        });
        return new CudaStream(context, handle, 0);
    }

    /// <summary>
    /// Wraps a stream made elsewhere (PyTorch, ONNX Runtime, ...) without taking ownership; 0 is the legacy
    /// default stream. The caller keeps the stream alive while this wrapper is used.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    public static CudaStream Wrap(CudaContext context, nint stream)
    {
        ArgumentNullException.ThrowIfNull(context);
        return new CudaStream(context, null, stream);
    }

    /// <summary>Blocks the calling thread until all work queued on the stream has finished.</summary>
    /// <exception cref="ObjectDisposedException">The stream or its context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed, or queued work failed.</exception>
    public void Synchronize()
    {
        nint stream = Bind();
        NativeStatus.Check(CudaDriver.cuStreamSynchronize(stream));
    }

    /// <summary>True when all queued work has finished (does not wait).</summary>
    /// <exception cref="ObjectDisposedException">The stream or its context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed, or queued work failed.</exception>
    public bool IsIdle
    {
        get
        {
            nint stream = Bind();
            CuResult result = CudaDriver.cuStreamQuery(stream);
            if (result == CuResult.NotReady)
            {
                return false;
            }
            NativeStatus.Check(result, "cuStreamQuery(stream)");
            return true;
        }
    }

    /// <summary>Makes later work on this stream wait until <paramref name="event"/> completes (device-side; the host does not wait).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="event"/> is null.</exception>
    /// <exception cref="ArgumentException">The event belongs to another context.</exception>
    /// <exception cref="ObjectDisposedException">The stream, the event or the context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed.</exception>
    public void Wait(CudaEvent @event)
    {
        ArgumentNullException.ThrowIfNull(@event);
        Context.RequireSame(@event.Context, nameof(@event));
        nint stream = Bind();
        NativeStatus.Check(CudaDriver.cuStreamWaitEvent(stream, @event.Handle, 0));
    }

    /// <summary>Destroys an owned stream (queued work still completes); a wrapped stream is left alone.</summary>
    public void Dispose()
    {
        _disposed = true;
        _owned?.Dispose();
    }

    /// <summary>Makes the context current and returns the raw stream.</summary>
    internal nint Bind()
    {
        nint stream = Handle;
        Context.MakeCurrent();
        return stream;
    }
}
