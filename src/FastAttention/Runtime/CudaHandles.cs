// SafeHandles for driver objects. Each resource keeps its context alive (ref count) and frees itself with that
// context pushed, so disposal order does not matter and a finalizer never throws.
using System.Runtime.InteropServices;
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>A retained primary context; released (cuDevicePrimaryCtxRelease) when the last user lets go.</summary>
internal sealed class PrimaryContextHandle : SafeHandle
{
    public PrimaryContextHandle() : base(0, ownsHandle: true)
    {
    }

    /// <summary>The device ordinal the context belongs to.</summary>
    public int Device { get; private set; }

    public override bool IsInvalid => handle == 0;

    public void Set(nint context, int device)
    {
        Device = device;
        SetHandle(context);
    }

    protected override bool ReleaseHandle() => CudaDriver.cuDevicePrimaryCtxRelease_v2(Device) == CuResult.Success;
}

/// <summary>Kinds of driver objects that belong to a context.</summary>
internal enum CudaResourceKind
{
    DeviceMemory,
    PinnedHostMemory,
    Stream,
    Event,
    Module,
    CublasHandle,
}

/// <summary>
/// An owned driver object (memory, stream, event, module, cuBLAS handle). It holds a reference on its
/// context, so the context is released only after every object made in it is freed.
/// </summary>
internal sealed class CudaResourceHandle : SafeHandle
{
    private PrimaryContextHandle? _context;

    public CudaResourceHandle(CudaResourceKind kind) : base(0, ownsHandle: true) => Kind = kind;

    public CudaResourceKind Kind { get; }

    public override bool IsInvalid => handle == 0;

    /// <summary>The raw handle, or <see cref="ObjectDisposedException"/> naming <paramref name="owner"/> once disposed.</summary>
    public nint Get(object owner)
    {
        ObjectDisposedException.ThrowIf(IsClosed, owner);
        return DangerousGetHandle();
    }

    /// <summary>Takes ownership of <paramref name="raw"/> and a reference on <paramref name="context"/>.</summary>
    public void Attach(PrimaryContextHandle context, nint raw)
    {
        bool added = false;
        context.DangerousAddRef(ref added);
        _context = context;
        SetHandle(raw);
    }

    protected override bool ReleaseHandle()
    {
        nint context = _context!.DangerousGetHandle();
        bool pushed = CudaDriver.cuCtxPushCurrent_v2(context) == CuResult.Success;
        bool freed = Kind switch
        {
            CudaResourceKind.DeviceMemory => CudaDriver.cuMemFree_v2(handle) == CuResult.Success,
            CudaResourceKind.PinnedHostMemory => CudaDriver.cuMemFreeHost(handle) == CuResult.Success,
            CudaResourceKind.Stream => CudaDriver.cuStreamDestroy_v2(handle) == CuResult.Success,
            CudaResourceKind.Event => CudaDriver.cuEventDestroy_v2(handle) == CuResult.Success,
            CudaResourceKind.Module => CudaDriver.cuModuleUnload(handle) == CuResult.Success,
            _ => Cublas.cublasDestroy_v2(handle) == CublasStatus.Success,
        };
        if (pushed)
        {
            CudaDriver.cuCtxPopCurrent_v2(out _);
        }
        _context.DangerousRelease();
        return freed;
    }
}
