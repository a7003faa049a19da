// CUDA events: record on a stream, wait, query, and time the work between two events.
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>A CUDA event: a marker in a stream, used to order streams and to time GPU work.</summary>
public sealed class CudaEvent : IDisposable
{
    private readonly CudaResourceHandle _handle;

    private CudaEvent(CudaContext context, CudaResourceHandle handle, bool timing)
    {
        Context = context;
        _handle = handle;
        IsTimingEnabled = timing;
    }

    /// <summary>The context the event belongs to.</summary>
    public CudaContext Context { get; }

    /// <summary>True when the event records timestamps.</summary>
    public bool IsTimingEnabled { get; }

    /// <summary>The raw <c>CUevent</c>.</summary>
    /// <exception cref="ObjectDisposedException">The event was disposed.</exception>
    public nint Handle => _handle.Get(this);

    /// <summary>Creates an event.</summary>
    /// <param name="context">The context.</param>
    /// <param name="enableTiming">True (default) to allow <see cref="ElapsedMilliseconds"/>; false makes recording cheaper.</param>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed.</exception>
    public static CudaEvent Create(CudaContext context, bool enableTiming = true)
    {
        ArgumentNullException.ThrowIfNull(context);
        uint flags = enableTiming ? 0 : CudaDriver.EventDisableTiming;
        var handle = context.Own(CudaResourceKind.Event, () =>
        {
            NativeStatus.Check(CudaDriver.cuEventCreate(out nint @event, flags));
            return @event;
        });
        return new CudaEvent(context, handle, enableTiming);
    }

    /// <summary>Records the event at the current end of <paramref name="stream"/>'s queue (does not wait).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ArgumentException">The stream belongs to another context.</exception>
    /// <exception cref="ObjectDisposedException">The event, the stream or the context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed.</exception>
    public void Record(CudaStream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Context.RequireSame(stream.Context, nameof(stream));
        nint raw = stream.Bind();
        NativeStatus.Check(CudaDriver.cuEventRecord(Handle, raw));
    }

    /// <summary>Blocks the calling thread until the recorded work has finished.</summary>
    /// <exception cref="ObjectDisposedException">The event or the context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed, or the recorded work failed.</exception>
    public void Synchronize()
    {
        Context.MakeCurrent();
        NativeStatus.Check(CudaDriver.cuEventSynchronize(Handle));
    }

    /// <summary>True when the recorded work has finished (or the event was never recorded); does not wait.</summary>
    /// <exception cref="ObjectDisposedException">The event or the context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed, or the recorded work failed.</exception>
    public bool IsCompleted
    {
        get
        {
            Context.MakeCurrent();
            CuResult result = CudaDriver.cuEventQuery(Handle);
            if (result == CuResult.NotReady)
            {
                return false;
            }
            NativeStatus.Check(result, "cuEventQuery(event)");
            return true;
        }
    }

    /// <summary>Milliseconds of GPU time between two completed events (resolution about 0.5 µs).</summary>
    /// <exception cref="ArgumentNullException">An event is null.</exception>
    /// <exception cref="ArgumentException">An event has timing disabled, or the events belong to different contexts.</exception>
    /// <exception cref="ObjectDisposedException">An event or the context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed (e.g. CUDA_ERROR_NOT_READY when an event has not completed).</exception>
    public static float ElapsedMilliseconds(CudaEvent start, CudaEvent end)
    {
        ArgumentNullException.ThrowIfNull(start);
        ArgumentNullException.ThrowIfNull(end);
        if (!start.IsTimingEnabled || !end.IsTimingEnabled)
        {
            throw new ArgumentException("Both events must be created with enableTiming: true.", start.IsTimingEnabled ? nameof(end) : nameof(start));
        }
        start.Context.RequireSame(end.Context, nameof(end));
        start.Context.MakeCurrent();
        NativeStatus.Check(CudaDriver.cuEventElapsedTime(out float milliseconds, start.Handle, end.Handle));
        return milliseconds;
    }

    /// <summary>Destroys the event.</summary>
    public void Dispose() => _handle.Dispose();
}
