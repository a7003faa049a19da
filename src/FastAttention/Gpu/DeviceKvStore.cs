// The device side shared by CudaPagedKvCache and CudaKvCache: K/V pools with their row strides, the kernels of both
// families, the launch-parameter structs they take (mirrors of the C structs), and reusable staging and scratch.
using System.Runtime.InteropServices;
using FastAttention.Compilation;
using FastAttention.Interop;
using FastAttention.Runtime;

namespace FastAttention.Gpu;

/// <summary>Mirror of <c>fa_decode_params</c> (paged_decode.cu); the kernel file asserts the same size.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct DecodeParams
{
    public const int Size = 232;
    public nint Q, KPool, VPool, BlockTables, SeqLens, O, Lse, PartO, PartLse;
    public long QStrideB, QStrideS, QStrideH, OStrideB, OStrideS, OStrideH, LseStrideB, LseStrideH, LseStrideS, KvHeadStride, PageStride;
    public int Batch, QLen, Heads, KvHeads, Group, TableStride, PageShift, Causal, WindowLeft, WindowRight, NumSplits, KeysPerSplit, RowChunks;
    public float ScaleLog2, Softcap, SoftcapLog2, ScaleOverSoftcap;
}

/// <summary>Mirror of <c>fa_kv_append_params</c> (kv_append.cu).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct KvAppendParams
{
    public const int Size = 120;
    public nint KSrc, VSrc, KPool, VPool, BlockTables, EntryTokenStart, EntryPosition;
    public long SrcEntryStride, SrcTokenStride, SrcHeadStride, PoolHeadStride, PoolPageStride;
    public int Entries, Tokens, KvHeads, TableStride, PageShift, Ragged;
}

/// <summary>Mirror of <c>fa_kv_copy_params</c> (kv_append.cu).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct KvCopyParams
{
    public const int Size = 48;
    public nint KPool, VPool, Copies;
    public long PoolHeadStride, PoolPageStride;
    public int Count;
}

/// <summary>
/// A grow-only int32 upload area: pinned host memory, a device buffer and an event. <see cref="Begin"/> waits until
/// the previous upload has left the pinned memory, <see cref="Upload"/> queues the copy on the stream, so kernels
/// queued after it on that stream read the new contents and kernels queued before it read the old ones.
/// </summary>
internal sealed unsafe class DeviceStaging(CudaContext context) : IDisposable
{
    private PinnedHostBuffer<int>? _host;
    private DeviceBuffer<int>? _device;
    private CudaEvent? _copied;

    /// <summary>Host memory for <paramref name="count"/> ints, free to overwrite.</summary>
    public Span<int> Begin(int count, CudaStream stream)
    {
        _copied ??= CudaEvent.Create(context, enableTiming: false);
        _copied.Synchronize();
        if (_host is null || _host.Length < count)
        {
            // Kernels queued earlier may still read the old device buffer: let them finish before freeing it.
            stream.Synchronize();
            int capacity = Math.Max(count, Math.Min(int.MaxValue / 2, (_host?.Length ?? 256)) * 2);
            _host?.Dispose();
            _device?.Dispose();
            _host = PinnedHostBuffer<int>.Allocate(context, capacity);
            _device = DeviceBuffer<int>.Allocate(context, capacity);
        }
        return _host.Span[..count];
    }

    /// <summary>Queues the copy of the first <paramref name="count"/> ints; returns the device address of int 0.</summary>
    public nint Upload(int count, CudaStream stream)
    {
        nint device = _device!.DevicePointer;
        if (count > 0)
        {
            nint raw = stream.Bind();
            NativeStatus.Check(CudaDriver.cuMemcpyHtoDAsync_v2(device, (void*)_host!.HostPointer, (nuint)count * sizeof(int), raw));
            _copied!.Record(stream);
        }
        GC.KeepAlive(_host);
        return device;
    }

    public void Dispose()
    {
        _host?.Dispose();
        _device?.Dispose();
        _copied?.Dispose();
    }
}

/// <summary>
/// K and V pools of a device cache and everything a launch on them needs. Row of KV head h, page p, slot s starts at
/// element <c>h * HeadStride + p * PageStride + s * HeadDim</c> (64-bit). Not thread-safe; one stream at a time.
/// </summary>
internal sealed class DeviceKvStore<T> : IDisposable where T : unmanaged
{
    private CudaModule? _decodeModule, _appendModule;
    private DeviceBuffer<float>? _scratch;
    private int _blocksPerMultiprocessor;

    public DeviceKvStore(CudaContext context, long rows, int pageSize, long headStride, int kvHeads, int headDim)
    {
        Context = context;
        Type = KernelElementTypes.Of<T>();
        (PageSize, PageShift, HeadStride, PageStride, KvHeads, HeadDim) =
            (pageSize, System.Numerics.BitOperations.Log2((uint)pageSize), headStride, (long)pageSize * headDim, kvHeads, headDim);
        Keys = DeviceBuffer<T>.Allocate(context, rows * headDim);
        try
        {
            Values = DeviceBuffer<T>.Allocate(context, rows * headDim);
        }
        catch
        {
            Keys.Dispose();
            throw;
        }
        Staging = new DeviceStaging(context);
    }

    public CudaContext Context { get; }
    public KernelElementType Type { get; }
    public int PageSize { get; }
    public int PageShift { get; }
    public long HeadStride { get; }
    public long PageStride { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    public DeviceBuffer<T> Keys { get; }
    public DeviceBuffer<T> Values { get; }
    public DeviceStaging Staging { get; }

    /// <summary>The pools' layout, as the launch plans take it.</summary>
    public KvPoolGeometry Geometry => new(PageSize, KvHeads, HeadDim, HeadStride);

    public CudaKernel GetDecodeKernel(DecodeKernel kernel) => DecodeModule.GetKernel(DecodeLaunchPlan.DecodeKernelName(kernel, Type, HeadDim));

    /// <summary>
    /// A kernel of the decode module (paged_decode.cu) by name, allowed <paramref name="dynamicSharedBytes"/> of dynamic
    /// shared memory (the kernel's limit is raised when that is above it).
    /// </summary>
    public CudaKernel DecodeModuleKernel(string name, int dynamicSharedBytes = 0)
    {
        CudaKernel kernel = DecodeModule.GetKernel(name);
        kernel.EnsureDynamicSharedMemory(dynamicSharedBytes);
        return kernel;
    }

    public CudaKernel AppendKernel => AppendModule.GetKernel(KvAppendLaunch.AppendKernelName(Type, HeadDim));
    public CudaKernel CopyPagesKernel => AppendModule.GetKernel(KvAppendLaunch.CopyKernelName(Type, HeadDim));

    /// <summary>Resident tuned decode blocks per SM, from the loaded kernel's registers and its static and dynamic shared memory.</summary>
    public int BlocksPerMultiprocessor
    {
        get
        {
            if (_blocksPerMultiprocessor == 0)
            {
                var a = GetDecodeKernel(DecodeKernel.Tuned).Attributes;
                var d = Context.Device;
                _blocksPerMultiprocessor = DecodePlanner.BlocksPerMultiprocessor(a.Registers,
                    a.StaticSharedMemoryBytes + DecodeLaunchPlan.TunedSharedMemoryBytes(Type, HeadDim), DecodeLaunchPlan.Threads,
                    d.RegistersPerMultiprocessor, d.SharedMemoryPerMultiprocessorBytes, d.MaxThreadsPerMultiprocessor);
            }
            return _blocksPerMultiprocessor;
        }
    }

    /// <summary>fp32 scratch of at least <paramref name="count"/> elements (grow-only; the stream is drained before a regrowth frees the old one).</summary>
    public DeviceBuffer<float> Scratch(long count, CudaStream stream)
    {
        if (_scratch is null || _scratch.Length < count)
        {
            stream.Synchronize();
            _scratch?.Dispose();
            _scratch = null;
            _scratch = DeviceBuffer<float>.Allocate(Context, Math.Max(count, 1));
        }
        return _scratch;
    }

    /// <summary>Queues a copy-on-write launch built by <see cref="KvAppendLaunch.Copy"/> on this store's pools.</summary>
    public void Launch(KvCopyParams p, LaunchConfig config, CudaStream stream)
    {
        var args = new KernelArguments();
        args.Add(p);
        CopyPagesKernel.Launch(config, stream, ref args);
    }

    /// <summary>Queues an append launch built by <see cref="KvAppendLaunch.Append"/> on this store's pools (staged arrays already uploaded).</summary>
    public void Launch(KvAppendParams p, LaunchConfig config, CudaStream stream)
    {
        var args = new KernelArguments();
        args.Add(p);
        AppendKernel.Launch(config, stream, ref args);
    }

    private CudaModule DecodeModule => _decodeModule ??= CudaModule.Load(Context, KernelCompiler.Shared, KernelRegistry.PagedDecode(Type, HeadDim));
    private CudaModule AppendModule => _appendModule ??= CudaModule.Load(Context, KernelCompiler.Shared, KernelRegistry.KvAppend(Type, HeadDim));

    public void Dispose()
    {
        Keys.Dispose();
        Values.Dispose();
        Staging.Dispose();
        _scratch?.Dispose();
        _decodeModule?.Dispose();
        _appendModule?.Dispose();
    }
}
