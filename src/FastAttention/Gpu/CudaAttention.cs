// Public host API of the CUDA attention forward: argument checks, kernel choice (tuned tensor-core or plain SIMT),
// reusable device tables (lengths, block-sparse tile lists), and the launch on the caller's stream.
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Gpu;

/// <summary>Which attention forward kernel <see cref="CudaAttention"/> runs.</summary>
public enum CudaKernelVariant
{
    /// <summary>
    /// The tuned flash-style kernel (tensor cores, mma.sync m16n8k16 with fp32 accumulation) for fp16 and bf16.
    /// fp32 tensors, and layouts it cannot read (head-dim stride other than 1, other strides or the base address
    /// not 16-byte aligned), run on <see cref="Plain"/>.
    /// </summary>
    Tuned,

    /// <summary>The plain SIMT kernel: simple indexing, fp32 arithmetic, any strides, every element type.</summary>
    Plain,
}

/// <summary>
/// Scaled dot-product attention forward on a CUDA device: one pass, online softmax, fp32 accumulation, with the
/// semantics of <c>CpuAttention.Forward</c> (FlashAttention-2's): scale defaults to <c>1/sqrt(D)</c>; causal with
/// Sq != Sk is bottom-right aligned; sliding windows, per-sequence key and query lengths and block-sparse layouts
/// (<see cref="AttentionMask"/>); GQA/MQA query head <c>h</c> reads KV head <c>h / (H / Hkv)</c>; a query row that
/// sees no key outputs zeros and a log-sum-exp of negative infinity, never NaN.
/// </summary>
/// <remarks>
/// Kernels are compiled with NVRTC for the device on first use (and cached) and loaded once per instance. The small
/// tables a call needs (lengths, block-sparse tile lists and flags) live in device memory owned by the instance and
/// reused across calls; after warm-up a call allocates no device memory. Calls are serialised by a lock; when a
/// call's tables differ from the previous call's, the host waits for the previous call's kernel before overwriting
/// them. Tensors must not be disposed while a queued call still uses them.
/// </remarks>
public sealed class CudaAttention : IDisposable
{
    private readonly Lock _lock = new();
    private readonly KernelCompiler _compiler;
    private readonly Dictionary<string, CudaModule> _modules = new(StringComparer.Ordinal);
    private readonly CudaStream _defaultStream;
    private DeviceBuffer<int>? _tables;
    private PinnedHostBuffer<int>? _staging;
    private int[] _uploaded = [];
    private CudaEvent? _lastUse;
    private bool _disposed;

    /// <summary>An attention engine for <paramref name="context"/>.</summary>
    /// <param name="context">The context whose device runs the kernels; every tensor passed in must belong to it.</param>
    /// <param name="compiler">Compiler (and cache) for the kernels; null = <see cref="KernelCompiler.Shared"/>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    public CudaAttention(CudaContext context, KernelCompiler? compiler = null)
    {
        ArgumentNullException.ThrowIfNull(context);
        context.ThrowIfDisposed();
        Context = context;
        _compiler = compiler ?? KernelCompiler.Shared;
        _defaultStream = CudaStream.Wrap(context, 0);
    }

    /// <summary>The context.</summary>
    public CudaContext Context { get; }

    /// <summary>Which kernel runs fp16/bf16 calls; fp32 always runs on the SIMT kernel. Default <see cref="CudaKernelVariant.Tuned"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a defined variant.</exception>
    public CudaKernelVariant Variant
    {
        get;
        set => field = Enum.IsDefined(value) ? value : throw new ArgumentOutOfRangeException(nameof(Variant), value, "Unknown kernel variant.");
    } = CudaKernelVariant.Tuned;

    /// <summary>Name of the kernel the last successful call launched (e.g. <c>fa_fwd_hd128_f16_causal</c>), or null before the first.</summary>
    public string? LastKernelName { get; private set; }

    /// <summary>
    /// Attention forward: <c>output = softmax(scale · Q·Kᵀ + mask) · V</c> per batch entry and head, queued on
    /// <paramref name="stream"/> (the call does not wait for the kernel).
    /// </summary>
    /// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/>; accumulation is fp32.</typeparam>
    /// <param name="query">Q, <c>[B, Sq, H, D]</c>, any element strides (a <c>[B, H, S, D]</c> view works as is).</param>
    /// <param name="key">K, <c>[B, Sk, Hkv, D]</c>, any element strides.</param>
    /// <param name="value">V, <c>[B, Sk, Hkv, D]</c>, any element strides.</param>
    /// <param name="output">O, <c>[B, Sq, H, D]</c>; must not overlap the inputs.</param>
    /// <param name="options">Scale and mask; null = <see cref="AttentionOptions.Default"/>. <see cref="AttentionOptions.MaxDegreeOfParallelism"/> is ignored.</param>
    /// <param name="logSumExp">Optional fp32 <c>[B, H, Sq]</c>: natural-log sum of exp of the scaled, masked scores per row (-inf for rows that see no key).</param>
    /// <param name="stream">The stream to queue the kernel on; null = the legacy default stream.</param>
    /// <exception cref="ArgumentNullException">A tensor is null.</exception>
    /// <exception cref="ArgumentException">
    /// <typeparamref name="T"/> is not supported; a tensor has the wrong rank, a zero-size dimension or sizes that do
    /// not agree; H is not a multiple of Hkv; D is not 32, 64, 80, 96, 128 or 256; B or H exceeds 65535; a destination
    /// has the wrong lengths or a zero stride; the mask does not fit the shape; a tensor or the stream belongs to
    /// another context. Nothing is written or queued.
    /// </exception>
    /// <exception cref="ObjectDisposedException">This instance, a tensor, the stream or the context was disposed.</exception>
    /// <exception cref="NvrtcCompilationException">Compiling the kernel failed.</exception>
    /// <exception cref="CudaException">The driver failed to load or launch the kernel, or an earlier asynchronous error surfaced.</exception>
    public void Forward<T>(DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value, DeviceTensor<T> output,
        AttentionOptions? options = null, DeviceTensor<float>? logSumExp = null, CudaStream? stream = null) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        ArgumentNullException.ThrowIfNull(output);
        options ??= AttentionOptions.Default;
        ElementTypes.Require<T>(nameof(query));
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            Context.RequireSame(query.Context, nameof(query));
            Context.RequireSame(key.Context, nameof(key));
            Context.RequireSame(value.Context, nameof(value));
            Context.RequireSame(output.Context, nameof(output));
            if (logSumExp is not null) Context.RequireSame(logSumExp.Context, nameof(logSumExp));
            stream ??= _defaultStream;
            Context.RequireSame(stream.Context, nameof(stream));

            var plan = AttentionForwardPlanner.Plan(KernelElementTypes.Of<T>(), TensorDesc.Of(query), TensorDesc.Of(key),
                TensorDesc.Of(value), TensorDesc.Of(output), logSumExp is null ? null : TensorDesc.Of(logSumExp), options, Variant);
            CudaKernel kernel = KernelFor(plan);
            nint tables = UploadTables(plan.Tables, stream);
            var args = new KernelArguments();
            args.Add(plan.WithTables(tables));
            kernel.Launch(plan.Launch, stream, ref args);
            if (plan.Tables.Length > 0)
            {
                _lastUse ??= CudaEvent.Create(Context, enableTiming: false);
                _lastUse.Record(stream);
            }
            LastKernelName = plan.KernelName;
            GC.KeepAlive(query);
            GC.KeepAlive(key);
            GC.KeepAlive(value);
            GC.KeepAlive(output);
            GC.KeepAlive(logSumExp);
        }
    }

    /// <summary>Unloads the kernels and frees the tables (wait for queued calls first).</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            _lastUse?.Dispose();
            _tables?.Dispose();
            _staging?.Dispose();
            foreach (var module in _modules.Values) module.Dispose();
            _modules.Clear();
            _defaultStream.Dispose();
        }
    }

    private CudaKernel KernelFor(ForwardPlan plan)
    {
        if (!_modules.TryGetValue(plan.Specialization.Name, out CudaModule? module))
        {
            module = CudaModule.Load(Context, _compiler, plan.Specialization);
            _modules.Add(plan.Specialization.Name, module);
        }
        CudaKernel kernel = module.GetKernel(plan.KernelName);
        kernel.EnsureDynamicSharedMemory(plan.Launch.DynamicSharedMemoryBytes);
        return kernel;
    }

    /// <summary>Copies the call's tables to device memory (unless the same tables are already there); returns their address.</summary>
    private nint UploadTables(int[] values, CudaStream stream)
    {
        if (values.Length == 0) return 0;
        if (_tables is not null && values.AsSpan().SequenceEqual(_uploaded))
        {
            // Same tables: the upload that wrote them may have been queued on another stream.
            if (_lastUse is not null) stream.Wait(_lastUse);
            return _tables.DevicePointer;
        }
        // The previous call's kernel (and the copy before it) may still read the device tables and the staging buffer.
        _lastUse?.Synchronize();
        if (_tables is null || _tables.Length < values.Length)
        {
            int capacity = Math.Max(values.Length, (int)Math.Min(Array.MaxLength, 2L * (_tables?.Length ?? 0)));
            _tables?.Dispose();
            _staging?.Dispose();
            _tables = null;
            _staging = null;
            _uploaded = [];
            _tables = DeviceBuffer<int>.Allocate(Context, capacity);
            _staging = PinnedHostBuffer<int>.Allocate(Context, capacity);
        }
        // The whole staging buffer goes over (at most twice the tables): the tail past this call's tables is unused.
        values.CopyTo(_staging!.Span);
        _tables.CopyFromAsync(_staging, stream);
        _uploaded = values;
        // Covers the copy even if the launch that follows fails: a later call that reuses these tables, or that
        // overwrites the staging buffer, waits for it.
        _lastUse ??= CudaEvent.Create(Context, enableTiming: false);
        _lastUse.Record(stream);
        return _tables.DevicePointer;
    }
}
