// The device's primary context (the one the CUDA runtime, PyTorch and ONNX Runtime share), bound on whichever thread uses it.
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>
/// The primary context of one device. Every object made in it (buffers, streams, events, modules) makes it
/// current on the calling thread before each driver call, so it can be used from any thread. Disposing
/// releases this reference; the driver frees the context after the last buffer, stream, event or module
/// made in it is freed too.
/// </summary>
public sealed class CudaContext : IDisposable
{
    private readonly PrimaryContextHandle _handle;
    private int _disposed;

    private CudaContext(CudaDevice device, PrimaryContextHandle handle)
    {
        Device = device;
        _handle = handle;
    }

    /// <summary>The device.</summary>
    public CudaDevice Device { get; }

    /// <summary>The raw <c>CUcontext</c>, for interop with other CUDA libraries.</summary>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    public nint Handle
    {
        get
        {
            ThrowIfDisposed();
            return _handle.DangerousGetHandle();
        }
    }

    internal PrimaryContextHandle SafeHandle => _handle;

    /// <summary>Retains the primary context of device <paramref name="deviceOrdinal"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">No device has that ordinal.</exception>
    /// <exception cref="DllNotFoundException">The CUDA driver library cannot be loaded.</exception>
    /// <exception cref="CudaException">The driver failed.</exception>
    public static CudaContext Create(int deviceOrdinal = 0) => Create(CudaDevice.Get(deviceOrdinal));

    /// <summary>Retains the primary context of <paramref name="device"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="device"/> is null.</exception>
    /// <exception cref="DllNotFoundException">The CUDA driver library cannot be loaded.</exception>
    /// <exception cref="CudaException">The driver failed.</exception>
    public static CudaContext Create(CudaDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        CudaDriverInit.Ensure();
        var handle = new PrimaryContextHandle();
        NativeStatus.Check(CudaDriver.cuDevicePrimaryCtxRetain(out nint context, device.Ordinal));
        handle.Set(context, device.Ordinal);
        var result = new CudaContext(device, handle);
        result.MakeCurrent();
        return result;
    }

    /// <summary>Makes this context current on the calling thread (a no-op when it already is).</summary>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed.</exception>
    public void MakeCurrent()
    {
        nint context = Handle;
        NativeStatus.Check(CudaDriver.cuCtxGetCurrent(out nint current));
        if (current != context)
        {
            NativeStatus.Check(CudaDriver.cuCtxSetCurrent(context));
        }
    }

    /// <summary>Waits for all work in the context. The only call in this layer that synchronises the whole device.</summary>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed, or earlier asynchronous work failed.</exception>
    public void Synchronize()
    {
        MakeCurrent();
        NativeStatus.Check(CudaDriver.cuCtxSynchronize());
    }

    /// <summary>Free and total device memory in bytes.</summary>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CudaException">The driver failed.</exception>
    public (long FreeBytes, long TotalBytes) GetMemoryInfo()
    {
        MakeCurrent();
        NativeStatus.Check(CudaDriver.cuMemGetInfo_v2(out nuint free, out nuint total));
        return ((long)free, (long)total);
    }

    /// <summary>
    /// Releases this reference to the primary context. From then on the context refuses use
    /// (<see cref="ObjectDisposedException"/>), even while objects made in it still hold the driver context alive.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _handle.Dispose();
        }
    }

    /// <summary>Creates an owned driver object: <paramref name="create"/> runs with this context current.</summary>
    internal CudaResourceHandle Own(CudaResourceKind kind, Func<nint> create)
    {
        MakeCurrent();
        var resource = new CudaResourceHandle(kind);
        resource.Attach(_handle, create());
        return resource;
    }

    // The handle's IsClosed stays false while children hold references on it, so disposal is tracked here.
    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    /// <summary>Throws when <paramref name="other"/> belongs to another context.</summary>
    internal void RequireSame(CudaContext other, string paramName)
    {
        if (!ReferenceEquals(other, this) && other.Handle != Handle)
        {
            throw new ArgumentException(
                $"{paramName} belongs to the context of device {other.Device.Ordinal}, not to this one (device {Device.Ordinal}).", paramName);
        }
    }
}
