// GPU fused softmax over materialised scores (softmax.cu): validation before any work, kernel choice, mask upload.
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Gpu;

/// <summary>
/// Fused row softmax on the GPU: <c>output = softmax(scale · scores)</c> over the last axis of <c>[B, H, Sq, Sk]</c>
/// scores, with the attention mask rules, max-subtracted, fp32 inside — the semantics of
/// <c>CpuAttention.Softmax</c>. Masked positions get 0; a row that sees no key is all zeros, never NaN; masked
/// positions are never read (they may hold NaN). For attention maps: callers that want probabilities.
/// </summary>
/// <remarks>
/// Kernels are compiled on first use per element type (NVRTC, cached). <see cref="Variant"/> selects the tuned
/// kernels (for rows with a unit last stride a warp per row up to 1024 keys and a CTA per row with the row in
/// registers up to 8192; an online max/sum CTA kernel for longer or strided rows; 16-byte loads and stores where
/// the rows are 16-byte aligned) or the plain SIMT kernel. Work is queued on the given stream; the call returns
/// without waiting, except that a call whose mask has per-sequence lengths or a block layout first waits for the
/// previous such call's kernel (they share one device staging buffer). An instance is not thread-safe.
/// </remarks>
public sealed class CudaSoftmax : IDisposable
{
    private readonly KernelCompiler _compiler;
    private readonly Dictionary<KernelElementType, CudaModule> _modules = [];
    private readonly CudaStream _defaultStream;
    private PinnedHostBuffer<byte>? _maskHost;
    private DeviceBuffer<byte>? _maskDevice;
    private CudaEvent? _maskInUse;
    private bool _disposed;

    /// <summary>Creates the softmax for a context.</summary>
    /// <param name="context">The CUDA context tensors and streams belong to.</param>
    /// <param name="compiler">The kernel compiler; null = <see cref="KernelCompiler.Shared"/>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    public CudaSoftmax(CudaContext context, KernelCompiler? compiler = null)
    {
        ArgumentNullException.ThrowIfNull(context);
        Context = context;
        _compiler = compiler ?? KernelCompiler.Shared;
        _defaultStream = CudaStream.Wrap(context, 0);
    }

    /// <summary>The context.</summary>
    public CudaContext Context { get; }

    /// <summary>Tuned kernels (default) or the plain SIMT kernel.</summary>
    public CudaKernelVariant Variant { get; set; } = CudaKernelVariant.Tuned;

    /// <summary>
    /// Queues <c>output = softmax(scale · scores)</c> over the last axis, masked.
    /// </summary>
    /// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
    /// <param name="scores">Raw scores, <c>[B, H, Sq, Sk]</c>, any strides.</param>
    /// <param name="output">Probabilities, <c>[B, H, Sq, Sk]</c>; may be the same memory as <paramref name="scores"/> with the same strides (in place).</param>
    /// <param name="scale">Multiplier applied to each score before the softmax (finite; negative and 0 allowed).</param>
    /// <param name="mask">Visibility rules as in attention (H is the size of axis 1); null = none.</param>
    /// <param name="stream">Stream to queue the work on; null = the legacy default stream.</param>
    /// <exception cref="ArgumentNullException"><paramref name="scores"/> or <paramref name="output"/> is null.</exception>
    /// <exception cref="ArgumentException">Unsupported <typeparamref name="T"/>, wrong rank or lengths, a zero-size dimension, an output with a zero stride on a dimension longer than 1, a mask that does not fit, or a tensor or stream of another context. Nothing is queued.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="scale"/> is not finite.</exception>
    /// <exception cref="ObjectDisposedException">This instance, a tensor or the stream was disposed.</exception>
    /// <exception cref="NvrtcCompilationException">The kernel failed to compile.</exception>
    /// <exception cref="CudaException">The driver failed (module load, copy or launch).</exception>
    public void Run<T>(DeviceTensor<T> scores, DeviceTensor<T> output, float scale = 1f, AttentionMask? mask = null, CudaStream? stream = null)
        where T : unmanaged
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(scores);
        ArgumentNullException.ThrowIfNull(output);
        mask ??= AttentionMask.None;
        Validate(scores.Rank, scores.Lengths, output.Rank, output.Lengths, output.Strides, scale, mask);
        Context.RequireSame(scores.Context, nameof(scores));
        Context.RequireSame(output.Context, nameof(output));
        stream ??= _defaultStream;
        Context.RequireSame(stream.Context, nameof(stream));

        KernelElementType type = KernelElementTypes.Of<T>();
        ReadOnlySpan<nint> l = scores.Lengths;
        CudaModule module = Module(type);
        SoftmaxMaskData layout = SoftmaxMaskData.LayoutOf(mask);
        nint maskData = layout.Size > 0 ? Upload(mask, layout, stream) : 0;
        SoftmaxParams p = SoftmaxParams.Create(scores.DevicePointer, scores.Strides, output.DevicePointer, output.Strides, l,
            System.Runtime.CompilerServices.Unsafe.SizeOf<T>(), scale, mask, maskData, layout);
        var plan = SoftmaxPlan.For(p.Rows, p.Sk, p.Unit == 1, Variant, Context.Device.MultiprocessorCount);
        CudaKernel kernel = module.GetKernel(plan.KernelName(type));
        var arguments = new KernelArguments();
        arguments.Add(p);
        kernel.Launch(new LaunchConfig((uint)plan.Grid, (uint)plan.ThreadsPerBlock), stream, ref arguments);
        if (layout.Size > 0) _maskInUse!.Record(stream);
    }

    /// <summary>
    /// The argument checks of <see cref="Run{T}"/>, in the CPU softmax's order and wording (pure; for tests).
    /// </summary>
    internal static void Validate(int rank, ReadOnlySpan<nint> lengths, int outputRank, ReadOnlySpan<nint> outputLengths,
        ReadOnlySpan<nint> outputStrides, float scale, AttentionMask mask)
    {
        if (rank != 4)
        {
            throw new ArgumentException($"scores must be rank 4 [B, H, Sq, Sk], got rank {rank}.", "scores");
        }
        for (int i = 0; i < 4; i++)
        {
            if (lengths[i] <= 0 || lengths[i] > int.MaxValue)
            {
                throw new ArgumentException($"scores dimension {i} has size {lengths[i]}; every dimension must be in [1, {int.MaxValue}].", "scores");
            }
        }
        if (!float.IsFinite(scale))
        {
            throw new ArgumentOutOfRangeException(nameof(scale), scale, $"scale must be finite, got {scale}.");
        }
        if (outputRank != 4 || !outputLengths.SequenceEqual(lengths))
        {
            throw new ArgumentException(
                $"output must have lengths [{string.Join(", ", lengths.ToArray())}] ([B, H, Sq, Sk]), got [{string.Join(", ", outputLengths.ToArray())}].", "output");
        }
        for (int i = 0; i < 4; i++)
        {
            if (outputStrides[i] == 0 && lengths[i] > 1)
            {
                throw new ArgumentException(
                    $"output has stride 0 on dimension {i} of length {lengths[i]}: outputs must not overlap.", "output");
            }
        }
        var shape = new AttentionShape((int)lengths[0], (int)lengths[2], (int)lengths[3], (int)lengths[1], (int)lengths[1], 1);
        shape.RequireMaskFits(mask, nameof(mask));
    }

    /// <summary>Frees the kernels and the mask staging buffers (after the queued work that uses them).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _maskInUse?.Synchronize();
        foreach (CudaModule module in _modules.Values) module.Dispose();
        _modules.Clear();
        _maskInUse?.Dispose();
        _maskDevice?.Dispose();
        _maskHost?.Dispose();
    }

    private CudaModule Module(KernelElementType type)
    {
        if (!_modules.TryGetValue(type, out CudaModule? module))
        {
            module = CudaModule.Load(Context, _compiler, KernelRegistry.Softmax(type));
            _modules[type] = module;
        }
        return module;
    }

    // Copies the mask data to the device in stream order. The staging buffers are shared by all calls, so the
    // previous masked call's kernel must have finished reading them first.
    private nint Upload(AttentionMask mask, SoftmaxMaskData layout, CudaStream stream)
    {
        _maskInUse?.Synchronize();
        if (_maskHost is null || _maskHost.Length != layout.Size)
        {
            _maskHost?.Dispose();
            _maskDevice?.Dispose();
            _maskHost = null;
            _maskDevice = null;
            _maskHost = PinnedHostBuffer<byte>.Allocate(Context, layout.Size);
            _maskDevice = DeviceBuffer<byte>.Allocate(Context, layout.Size);
        }
        _maskInUse ??= CudaEvent.Create(Context, enableTiming: false);
        layout.Write(mask, _maskHost.Span);
        _maskDevice!.CopyFromAsync(_maskHost, stream);
        return _maskDevice.DevicePointer;
    }
}
