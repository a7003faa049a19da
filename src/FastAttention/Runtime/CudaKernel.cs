// A kernel of a loaded module: driver-reported resources, the dynamic shared memory opt-in, and launches.
using System.Runtime.CompilerServices;
using FastAttention.Compilation;
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>Grid and block sizes (x, y, z).</summary>
/// <param name="X">Size in x.</param>
/// <param name="Y">Size in y.</param>
/// <param name="Z">Size in z.</param>
public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    /// <summary>A one-dimensional size.</summary>
    public static implicit operator Dim3(uint x) => new(x);

    /// <summary>"(x, y, z)".</summary>
    public override string ToString() => $"({X}, {Y}, {Z})";
}

/// <summary>How to launch a kernel.</summary>
/// <param name="Grid">Blocks in the grid.</param>
/// <param name="Block">Threads per block.</param>
/// <param name="DynamicSharedMemoryBytes">Dynamic shared memory per block.</param>
public readonly record struct LaunchConfig(Dim3 Grid, Dim3 Block, int DynamicSharedMemoryBytes = 0);

/// <summary>A kernel (CUfunction) of a loaded <see cref="CudaModule"/>.</summary>
public sealed class CudaKernel
{
    /// <summary>Dynamic shared memory a launch may use before <see cref="SetMaxDynamicSharedMemory"/> raises it.</summary>
    internal const int DefaultDynamicSharedMemoryBytes = 48 * 1024;

    private readonly nint _function;
    private int _dynamicSharedAllowed = DefaultDynamicSharedMemoryBytes;

    internal CudaKernel(CudaModule module, string name, nint function, KernelResourceUsage? compileReport)
    {
        Module = module;
        Name = name;
        _function = function;
        CompileReport = compileReport;
    }

    /// <summary>The module.</summary>
    public CudaModule Module { get; }

    /// <summary>The kernel name.</summary>
    public string Name { get; }

    /// <summary>The raw <c>CUfunction</c>.</summary>
    /// <exception cref="ObjectDisposedException">The module was unloaded.</exception>
    public nint Handle
    {
        get
        {
            _ = Module.Handle;
            return _function;
        }
    }

    /// <summary>What ptxas reported at compile time (CUBIN targets), or null (PTX targets).</summary>
    public KernelResourceUsage? CompileReport { get; }

    /// <summary>Resource usage as the driver reports it for the loaded code.</summary>
    /// <exception cref="ObjectDisposedException">The module was unloaded.</exception>
    /// <exception cref="CudaException">The driver failed.</exception>
    public KernelFunctionAttributes Attributes
    {
        get
        {
            Module.Context.MakeCurrent();
            return new KernelFunctionAttributes(
                Attribute(CuFunctionAttribute.NumRegs), Attribute(CuFunctionAttribute.SharedSizeBytes),
                Attribute(CuFunctionAttribute.LocalSizeBytes), Attribute(CuFunctionAttribute.ConstSizeBytes),
                Attribute(CuFunctionAttribute.MaxThreadsPerBlock), Attribute(CuFunctionAttribute.MaxDynamicSharedSizeBytes),
                Attribute(CuFunctionAttribute.PtxVersion), Attribute(CuFunctionAttribute.BinaryVersion));
        }
    }

    /// <summary>
    /// Allows launches with up to <paramref name="bytes"/> of dynamic shared memory (needed above 48 KiB; the
    /// device limit is <see cref="CudaDevice.SharedMemoryPerBlockOptInBytes"/> minus the static shared memory).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bytes"/> is negative or above the device's opt-in limit.</exception>
    /// <exception cref="ObjectDisposedException">The module was unloaded.</exception>
    /// <exception cref="CudaException">The driver refused the value.</exception>
    public void SetMaxDynamicSharedMemory(int bytes)
    {
        int limit = Module.Context.Device.SharedMemoryPerBlockOptInBytes;
        if (bytes < 0 || bytes > limit)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"Dynamic shared memory must be in [0, {limit}] bytes on {Module.Context.Device.Name}.");
        }
        nint function = Handle;
        Module.Context.MakeCurrent();
        NativeStatus.Check(CudaDriver.cuFuncSetAttribute(function, CuFunctionAttribute.MaxDynamicSharedSizeBytes, bytes));
        Volatile.Write(ref _dynamicSharedAllowed, bytes);
    }

    /// <summary>
    /// Raises the kernel's dynamic shared memory limit to <paramref name="bytes"/> when that is more than it allows now
    /// (<see cref="DefaultDynamicSharedMemoryBytes"/> until raised); a no-op otherwise, so callers can ask before every launch.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bytes"/> is above the device's opt-in limit.</exception>
    /// <exception cref="ObjectDisposedException">The module was unloaded.</exception>
    /// <exception cref="CudaException">The driver refused the value.</exception>
    internal void EnsureDynamicSharedMemory(int bytes)
    {
        if (bytes > Volatile.Read(ref _dynamicSharedAllowed)) SetMaxDynamicSharedMemory(bytes);
    }

    /// <summary>
    /// Queues the kernel on <paramref name="stream"/> and returns at once (no synchronisation). A launch error
    /// reported by the driver throws here; an error while the kernel runs surfaces at the next synchronising call.
    /// </summary>
    /// <param name="config">Grid, block and dynamic shared memory.</param>
    /// <param name="stream">The stream.</param>
    /// <param name="arguments">The kernel's arguments, in order.</param>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ArgumentException">A grid or block size is 0, the shared memory size is negative, or the stream belongs to another context.</exception>
    /// <exception cref="ObjectDisposedException">The module, the stream or the context was disposed.</exception>
    /// <exception cref="CudaException">The driver rejected the launch (e.g. CUDA_ERROR_INVALID_VALUE for a block too large).</exception>
    public unsafe void Launch(in LaunchConfig config, CudaStream stream, scoped ref KernelArguments arguments)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Module.Context.RequireSame(stream.Context, nameof(stream));
        Dim3 g = config.Grid, b = config.Block;
        if (g.X == 0 || g.Y == 0 || g.Z == 0 || b.X == 0 || b.Y == 0 || b.Z == 0 || config.DynamicSharedMemoryBytes < 0)
        {
            throw new ArgumentException($"Kernel {Name}: grid {g}, block {b} and shared memory {config.DynamicSharedMemoryBytes} B must all be positive (shared memory may be 0).",
                nameof(config));
        }
        nint function = Handle;
        nint raw = stream.Bind();
        int count = arguments.Count;
        void** pointers = stackalloc void*[Math.Max(count, 1)];
        arguments.FillPointers(pointers);
        NativeStatus.Check(CudaDriver.cuLaunchKernel(function, g.X, g.Y, g.Z, b.X, b.Y, b.Z,
            (uint)config.DynamicSharedMemoryBytes, raw, pointers, null));
        // Neither the module (cuModuleUnload) nor the stream (cuStreamDestroy) may be finalized before the launch is queued.
        GC.KeepAlive(this);
        GC.KeepAlive(stream);
    }

    /// <summary>"fa_fill_f32".</summary>
    public override string ToString() => Name;

    private int Attribute(CuFunctionAttribute attribute)
    {
        NativeStatus.Check(CudaDriver.cuFuncGetAttribute(out int value, attribute, Handle));
        return value;
    }
}

/// <summary>
/// Kernel arguments packed on the stack, without boxing: <c>var args = new KernelArguments(); args.Add(pointer); args.Add(n);</c>
/// then <see cref="CudaKernel.Launch"/>. Values are copied when added, so later changes to the variables do not matter.
/// </summary>
public unsafe ref struct KernelArguments
{
    /// <summary>Most arguments one launch can take.</summary>
    public const int MaxArguments = 32;

    /// <summary>Most bytes all arguments together can take (CUDA's own limit is 4 KiB, 32 KiB from 12.1 on Volta+).</summary>
    public const int MaxBytes = 4096;

    private ArgumentBytes _bytes;
    private ArgumentOffsets _offsets;
    private int _count;
    private int _used;

    /// <summary>Number of arguments added.</summary>
    public readonly int Count => _count;

    /// <summary>Appends an argument (a pointer as <see cref="nint"/>, a scalar, or a plain struct matching the kernel's parameter).</summary>
    /// <exception cref="InvalidOperationException">More than <see cref="MaxArguments"/> arguments or <see cref="MaxBytes"/> bytes.</exception>
    public void Add<T>(T value) where T : unmanaged
    {
        int size = sizeof(T);
        int align = size >= 8 ? 8 : size >= 4 ? 4 : size >= 2 ? 2 : 1;
        int offset = (_used + align - 1) & ~(align - 1);
        if (_count == MaxArguments || offset + size > MaxBytes)
        {
            throw new InvalidOperationException(
                $"Kernel arguments are limited to {MaxArguments} values and {MaxBytes} bytes; adding a {size}-byte {typeof(T).Name} exceeds that.");
        }
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref Unsafe.As<ArgumentBytes, byte>(ref _bytes), offset), value);
        _offsets[_count++] = offset;
        _used = offset + size;
    }

    /// <summary>Reads argument <paramref name="index"/> back (for tests and diagnostics).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not below <see cref="Count"/>.</exception>
    public readonly T Get<T>(int index) where T : unmanaged
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)_count, nameof(index));
        return Unsafe.ReadUnaligned<T>(ref Unsafe.Add(ref Unsafe.As<ArgumentBytes, byte>(ref Unsafe.AsRef(in _bytes)), _offsets[index]));
    }

    /// <summary>Writes the address of each argument. A ref struct lives on the stack, so the addresses stay valid for the launch.</summary>
    internal void FillPointers(void** pointers)
    {
        byte* start = (byte*)Unsafe.AsPointer(ref Unsafe.As<ArgumentBytes, byte>(ref _bytes));
        for (int i = 0; i < _count; i++)
        {
            pointers[i] = start + _offsets[i];
        }
    }

    [InlineArray(MaxBytes / 8)]
    private struct ArgumentBytes
    {
        private ulong _element;
    }

    [InlineArray(MaxArguments)]
    private struct ArgumentOffsets
    {
        private int _element;
    }
}
