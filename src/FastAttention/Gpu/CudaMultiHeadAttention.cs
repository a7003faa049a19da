// Multi-head attention module on the GPU: cuBLAS projections (one fused QKV GEMM, biases folded in), the fused attention
// kernel reading Q/K/V in place, the output projection; incremental decode over device KV caches. One stream, no host
// round trips, workspace grown on demand and reused.
using System.Runtime.CompilerServices;
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Gpu;

/// <summary>
/// Multi-head attention on the GPU with the semantics, weight layout and weight files of the CPU module
/// (<c>FastAttention.Cpu.MultiHeadAttention</c>): <c>out = Wo · Attention(Wq·x, Wk·c, Wv·c) + bo</c> with self-attention
/// (c = x) or cross-attention, causal and sliding-window masks, the config's block-sparse pattern, padding by key and
/// query lengths, MHA/GQA/MQA, and incremental decoding over a <see cref="CudaKvCache{T}"/> or a
/// <see cref="CudaPagedKvCache{T}"/> that equals the full causal forward.
/// </summary>
/// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/>: weights, activations and workspace are stored in T;
/// GEMMs and attention accumulate in fp32.</typeparam>
/// <remarks>
/// <para>Per call, everything is queued on <see cref="Stream"/> (cuBLAS is bound to it) and the call returns without
/// waiting: for self-attention and decode one fused GEMM <c>[B·S, modelDim] · Wqkvᵀ</c> writes
/// <c>[B·S, H·D + 2·Hkv·D]</c>, the attention reads Q, K, V from it through strided views, and a second GEMM projects
/// the attention output (activations whose rows are not equally spaced take strided-batched GEMMs instead). Cross-attention projects Q and the K/V pair with two GEMMs. A bias is broadcast into the GEMM
/// output by a small kernel and the GEMM accumulates onto it (beta = 1), so fp16/bf16 results are rounded once.</para>
/// <para>The workspace (projections and attention output) grows on demand; calls whose shapes fit what was already
/// allocated allocate no device memory. Growing waits for the stream before freeing the smaller buffers.</para>
/// <para>Nothing is read back to the host. Two waits remain outside this class: <see cref="CudaAttention"/> waits for its
/// previous kernel before it overwrites its length/block tables with different ones (calls whose key/query lengths change),
/// and the device caches stage block tables and lengths through one pinned buffer, so an incremental step waits until the
/// step's previous staging copy has reached the device.</para>
/// <para>Attention probabilities are not produced on the GPU (there is no GPU softmax-materialising path here); use the
/// CPU module for them. Not thread-safe: one call at a time per instance.</para>
/// </remarks>
public sealed class CudaMultiHeadAttention<T> : IDisposable where T : unmanaged
{
    private readonly CudaBlas _blas;
    private readonly CudaAttention _attention;
    private readonly CudaModule _module;
    private readonly CudaKernel _biasKernel;
    private readonly bool _ownsStream;
    private readonly DeviceBuffer<T> _fusedWeight, _kvWeight, _outputWeight;
    private readonly DeviceBuffer<T>? _fusedBias, _kvBias, _outputBias;
    private DeviceBuffer<T>? _projected, _attended;
    private Views? _views;
    private readonly ModuleMasks _masks;
    private bool _disposed;

    /// <summary>Creates a module with zero weights on <paramref name="context"/>'s device (set them with <see cref="SetWeights"/> or <see cref="LoadWeights"/>).</summary>
    /// <param name="config">Shapes and behaviour.</param>
    /// <param name="context">The device context.</param>
    /// <param name="stream">The stream every call queues its work on; null = a new stream the module owns.</param>
    /// <param name="compiler">Kernel compiler; null = <see cref="KernelCompiler.Shared"/>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="config"/> or <paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is not float, Half or BFloat16, the head dim is not one of <see cref="AttentionKernelTraits.SupportedHeadDims"/>, or the stream belongs to another context.</exception>
    /// <exception cref="DllNotFoundException">cuBLAS or NVRTC cannot be loaded.</exception>
    /// <exception cref="CudaException">The driver failed (allocation, module load).</exception>
    public CudaMultiHeadAttention(AttentionConfig config, CudaContext context, CudaStream? stream = null, KernelCompiler? compiler = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(context);
        ElementTypes.Require<T>(nameof(T));
        if (!AttentionKernelTraits.SupportedHeadDims.Contains(config.HeadDim))
        {
            throw new ArgumentException(
                $"config.HeadDim = {config.HeadDim} is not supported by the CUDA attention kernels; supported head dims are {string.Join(", ", AttentionKernelTraits.SupportedHeadDims)}.", nameof(config));
        }
        if (stream is not null) context.RequireSame(stream.Context, nameof(stream));
        Config = config;
        _masks = new ModuleMasks(config);
        Context = context;
        int model = config.ModelDim, qw = QueryWidth, kw = KvWidth;
        var created = new List<IDisposable>();
        try
        {
            _ownsStream = stream is null;
            Stream = stream ?? Track(created, CudaStream.Create(context));
            _blas = Track(created, CudaBlas.Create(context));
            _blas.SetStream(Stream);
            compiler ??= KernelCompiler.Shared;
            _attention = Track(created, new CudaAttention(context, compiler));
            _module = Track(created, CudaModule.Load(context, compiler, KernelRegistry.Module(KernelElementTypes.Of<T>())));
            _biasKernel = _module.GetKernel($"fa_bias_rows_{KernelElementTypes.Of<T>().Suffix()}");
            _fusedWeight = Track(created, DeviceBuffer<T>.Allocate(context, (long)FusedWidth * model));
            _outputWeight = Track(created, DeviceBuffer<T>.Allocate(context, (long)model * qw));
            _kvWeight = _fusedWeight.Slice((long)qw * model, 2L * kw * model);
            if (config.Bias)
            {
                _fusedBias = Track(created, DeviceBuffer<T>.Allocate(context, FusedWidth));
                _outputBias = Track(created, DeviceBuffer<T>.Allocate(context, model));
                _kvBias = _fusedBias.Slice(qw, 2L * kw);
            }
            _fusedWeight.Clear();
            _outputWeight.Clear();
            _fusedBias?.Clear();
            _outputBias?.Clear();
        }
        catch
        {
            for (int i = created.Count - 1; i >= 0; i--) created[i].Dispose();
            throw;
        }
    }

    /// <summary>The configuration.</summary>
    public AttentionConfig Config { get; }

    /// <summary>The context.</summary>
    public CudaContext Context { get; }

    /// <summary>The stream every call queues its work on (cuBLAS is bound to it).</summary>
    public CudaStream Stream { get; }

    /// <summary>
    /// Which attention kernel runs fp16/bf16 calls: the tuned tensor-core kernel (default) or the plain SIMT one, for
    /// checking one against the other (fp32 always runs the SIMT kernel).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a defined variant.</exception>
    public CudaKernelVariant AttentionVariant
    {
        get => _attention.Variant;
        set => _attention.Variant = value;
    }

    /// <summary>Decode kernel version, softcap and split count of the incremental forwards; <see cref="GpuDecodeOptions.Default"/> by default.</summary>
    /// <exception cref="ArgumentNullException">The value is null.</exception>
    public GpuDecodeOptions DecodeOptions
    {
        get;
        set => field = value ?? throw new ArgumentNullException(nameof(DecodeOptions));
    } = GpuDecodeOptions.Default;

    /// <summary>Device bytes the workspace holds now (projections plus attention output); weights not included.</summary>
    public long WorkspaceBytes => (_projected?.SizeInBytes ?? 0) + (_attended?.SizeInBytes ?? 0);

    private int QueryWidth => Config.Heads * Config.HeadDim;
    private int KvWidth => Config.KvHeads * Config.HeadDim;
    private int FusedWidth => QueryWidth + 2 * KvWidth;

    /// <summary>
    /// Sets every weight (fp32, rounded to <typeparamref name="T"/> and copied to the device). Waits for the work queued on
    /// <see cref="Stream"/> first (it may still read the old weights), then copies synchronously.
    /// Same layouts and rules as the CPU module's <c>SetWeights</c>: Wq <c>[H·D, modelDim]</c>, Wk and Wv
    /// <c>[Hkv·D, modelDim]</c>, Wo <c>[modelDim, H·D]</c>; biases exactly when the config has them.
    /// </summary>
    /// <exception cref="ArgumentException">A weight or bias has the wrong length (message names it and the numbers), or biases are given/missing against <see cref="AttentionConfig.Bias"/>. Nothing changes.</exception>
    /// <exception cref="ObjectDisposedException">The module was disposed.</exception>
    /// <exception cref="CudaException">The copy failed.</exception>
    public void SetWeights(ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value, ReadOnlySpan<float> output,
        ReadOnlySpan<float> queryBias = default, ReadOnlySpan<float> keyBias = default, ReadOnlySpan<float> valueBias = default, ReadOnlySpan<float> outputBias = default)
    {
        ThrowIfDisposed();
        Upload(MultiHeadWeights.FromParts(Config, query, key, value, output, queryBias, keyBias, valueBias, outputBias));
    }

    /// <summary>Reads weights written by the CPU module's <c>SaveWeights</c> for the same shapes (waits for <see cref="Stream"/>, then copies synchronously).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="InvalidDataException">The stream is not a weight file, or its shapes differ from <see cref="Config"/> (message has both); nothing changes.</exception>
    /// <exception cref="ObjectDisposedException">The module was disposed.</exception>
    /// <exception cref="CudaException">The copy failed.</exception>
    public void LoadWeights(Stream stream)
    {
        ThrowIfDisposed();
        Upload(MultiHeadWeights.Read(Config, stream));
    }

    /// <summary>
    /// Full forward, queued on <see cref="Stream"/>. Self-attention when <paramref name="context"/> is null, otherwise
    /// cross-attention (queries from <paramref name="input"/>, keys and values from <paramref name="context"/>).
    /// Masks follow <see cref="AttentionMask"/>: the config's causal flag, window and block-sparse pattern, plus the lengths given here.
    /// </summary>
    /// <param name="input">x, <c>[B, Sq, modelDim]</c>: unit stride in the last dimension and rows that do not overlap. Any
    /// batch-major layout (padded rows, a window of longer sequences) or a sequence-major <c>[Sq, B, modelDim]</c> buffer viewed
    /// as <c>[B, Sq, modelDim]</c> is read in place; rows that are not equally spaced take one strided-batched GEMM per projection.</param>
    /// <param name="output"><c>[B, Sq, modelDim]</c>, same layout rules; may be the input's memory (it is written after the input is read).</param>
    /// <param name="context">Optional <c>[B, Sk, modelDim]</c> for cross-attention.</param>
    /// <param name="keyLengths">Optional valid key lengths per sequence, <c>[B]</c>, each in [0, Sk].</param>
    /// <param name="queryLengths">Optional valid query lengths per sequence, <c>[B]</c>; padded query rows output the output bias (the projection of zeros).</param>
    /// <param name="probabilities">Must be null: attention probabilities are not computed on the GPU.</param>
    /// <exception cref="ArgumentNullException"><paramref name="input"/> or <paramref name="output"/> is null.</exception>
    /// <exception cref="ArgumentException">Shapes or strides that do not fit the config or each other, lengths out of range, or a tensor of another context. Thrown before any work is queued.</exception>
    /// <exception cref="NotSupportedException"><paramref name="probabilities"/> is not null (use the CPU module for probabilities).</exception>
    /// <exception cref="ObjectDisposedException">The module or a tensor was disposed.</exception>
    /// <exception cref="CudaException">A launch failed.</exception>
    /// <exception cref="CublasException">cuBLAS rejected a GEMM.</exception>
    public void Forward(DeviceTensor<T> input, DeviceTensor<T> output, DeviceTensor<T>? context = null,
        int[]? keyLengths = null, int[]? queryLengths = null, DeviceTensor<float>? probabilities = null)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        if (probabilities is not null)
        {
            throw new NotSupportedException(
                "CudaMultiHeadAttention does not compute attention probabilities: the GPU path is the fused kernel, which never materialises them. Use the CPU module (FastAttention.Cpu.MultiHeadAttention) for probabilities.");
        }
        RequireContext(input, nameof(input));
        RequireContext(output, nameof(output));
        if (context is not null) RequireContext(context, nameof(context));
        var inputLayout = ActivationLayout.Of(input.Lengths, input.Strides, Config.ModelDim, nameof(input));
        ActivationLayout? contextLayout = context is null ? null : ActivationLayout.Of(context.Lengths, context.Strides, Config.ModelDim, nameof(context));
        var outputLayout = ActivationLayout.Of(output.Lengths, output.Strides, Config.ModelDim, nameof(output));
        var plan = MultiHeadPlan.Forward(Config, inputLayout, contextLayout, outputLayout);
        var shape = new AttentionShape(plan.Batch, plan.SeqQ, plan.SeqK, Config.Heads, Config.KvHeads, Config.HeadDim);
        shape.RequireMaskFits(new AttentionMask { KeyLengths = keyLengths }, nameof(keyLengths));
        shape.RequireMaskFits(new AttentionMask { QueryLengths = queryLengths }, nameof(queryLengths));
        var baseOptions = Options(plan.SeqQ, plan.SeqK);
        var options = baseOptions with { Mask = baseOptions.Mask with { KeyLengths = keyLengths, QueryLengths = queryLengths } };
        RequireAttentionAccepts(plan.Query, plan.Key, plan.Value, options);

        Views views = Prepare(plan);
        RunProjections(plan, input.Buffer, context?.Buffer, views);
        _attention.Forward(views.Query, views.Key, views.Value, views.Attended, options, null, Stream);
        RunStep(plan.OutputProjection, views.AttendedBuffer, output.Buffer);
    }

    /// <summary>
    /// Incremental forward over a contiguous device cache, queued on <see cref="Stream"/>: projects the <c>n</c> new tokens
    /// (one fused GEMM), appends their keys and values to <paramref name="cache"/> (one launch), runs decode attention from
    /// them over everything cached (causal and windowed as the config says, bottom-right aligned), and projects the result.
    /// Token by token or in chunks, the outputs equal the full causal forward.
    /// </summary>
    /// <param name="input">New tokens, <c>[B, n, modelDim]</c> with B = <see cref="CudaKvCache{T}.Batch"/>, laid out as for the full
    /// forward (e.g. the window <c>[pos, pos + n)</c> of a longer <c>[B, S, modelDim]</c> tensor).</param>
    /// <param name="output"><c>[B, n, modelDim]</c>, same layout rules.</param>
    /// <param name="cache">A cache with the config's Hkv and D, on this module's context. Its work must be queued on <see cref="Stream"/> only.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">Shapes that do not match, a cache of another shape or context, a block-sparse config (no
    /// block-sparse decode), a sequence that would pass the cache's <see cref="CudaKvCache{T}.MaxSequenceLength"/>, or more new
    /// tokens than one decode launch covers (n x H/Hkv above 65535 x 8). Nothing is queued and the cache is unchanged.</exception>
    /// <exception cref="ObjectDisposedException">The module, the cache or a tensor was disposed.</exception>
    /// <exception cref="CudaException">A launch failed.</exception>
    /// <exception cref="CublasException">cuBLAS rejected a GEMM.</exception>
    public void Forward(DeviceTensor<T> input, DeviceTensor<T> output, CudaKvCache<T> cache)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(cache);
        var plan = PlanIncremental(input, output, cache.Batch, cache.KvHeads, cache.HeadDim, cache.Context, nameof(cache));
        int n = plan.SeqQ;
        cache.RequireRoom(n, nameof(cache));
        // Every refusal the decode could make comes before the projections and the append: a refused call leaves the cache as it was.
        DecodeLaunchPlan.RequireLaunchable(plan.Batch, n, Config.Heads, Config.KvHeads, nameof(input));
        var options = Options(0, 0);
        Views views = Prepare(plan);
        RunProjections(plan, input.Buffer, null, views);
        cache.Append(views.Key, views.Value, Stream);
        CudaDecode.Decode(views.Query, cache, views.Attended, options, null, DecodeOptions, Stream);
        RunStep(plan.OutputProjection, views.AttendedBuffer, output.Buffer);
    }

    /// <summary>
    /// Incremental forward over a paged device cache: as the contiguous overload, with batch entry <c>b</c> appending to and
    /// reading sequence <c>sequences[b]</c> (shared pages of forked sequences are copied on write by the cache).
    /// </summary>
    /// <param name="input">New tokens, <c>[B, n, modelDim]</c> with B = <c>sequences.Length</c>.</param>
    /// <param name="output"><c>[B, n, modelDim]</c>.</param>
    /// <param name="cache">A paged cache with the config's Hkv and D, on this module's context. Its work must be queued on <see cref="Stream"/> only.</param>
    /// <param name="sequences">Distinct live sequence ids, <c>[B]</c>.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentException">Shapes that do not match, a cache of another shape or context, a block-sparse config, a
    /// sequence id that is not live or is listed twice, or more new tokens than one decode launch covers (n x H/Hkv above 65535 x 8).
    /// Nothing is queued and the cache is unchanged.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The pool has too few free pages for the whole batch (message has the numbers). Nothing is queued and the cache is unchanged.</exception>
    /// <exception cref="ObjectDisposedException">The module, the cache or a tensor was disposed.</exception>
    /// <exception cref="CudaException">A launch failed.</exception>
    /// <exception cref="CublasException">cuBLAS rejected a GEMM.</exception>
    public void Forward(DeviceTensor<T> input, DeviceTensor<T> output, CudaPagedKvCache<T> cache, ReadOnlySpan<int> sequences)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(cache);
        var plan = PlanIncremental(input, output, sequences.Length, cache.KvHeads, cache.HeadDim, cache.Context, nameof(cache));
        Span<int> counts = sequences.Length <= 256 ? stackalloc int[sequences.Length] : new int[sequences.Length];
        counts.Fill(plan.SeqQ);
        long needed = BatchAppend.PagesNeeded(cache.Allocator, sequences, counts);
        if (needed > cache.Allocator.FreePages)
        {
            throw new ArgumentOutOfRangeException(nameof(cache),
                $"Appending {plan.SeqQ} tokens to each of {sequences.Length} sequences needs {needed} free pages; the pool has {cache.Allocator.FreePages} of {cache.PageCount}. Nothing was queued.");
        }
        // Every refusal the decode could make comes before the projections and the append: a refused call leaves the cache as it was.
        DecodeLaunchPlan.RequireLaunchable(plan.Batch, plan.SeqQ, Config.Heads, Config.KvHeads, nameof(input));
        PagedDecodeTables.RequireStageable(sequences.Length, PagedDecodeTables.StrideAfterAppend(cache.Allocator, sequences, plan.SeqQ));
        var options = Options(0, 0);
        Views views = Prepare(plan);
        RunProjections(plan, input.Buffer, null, views);
        cache.Append(sequences, views.Key, views.Value, Stream);
        CudaDecode.Decode(views.Query, cache, sequences, views.Attended, options, null, DecodeOptions, Stream);
        RunStep(plan.OutputProjection, views.AttendedBuffer, output.Buffer);
    }

    /// <summary>Checks an incremental call (config, cache shape and context, activations) and plans it as self-attention over the new tokens.</summary>
    private MultiHeadPlan PlanIncremental(DeviceTensor<T> input, DeviceTensor<T> output, int batch, int kvHeads, int headDim, CudaContext cacheContext, string cacheName)
    {
        if (Config.Sparse != SparsePattern.None)
        {
            throw new ArgumentException($"Block-sparse pattern {Config.Sparse} is not supported with a KV cache; use a dense config (a sliding window is supported).", cacheName);
        }
        if (kvHeads != Config.KvHeads || headDim != Config.HeadDim)
        {
            throw new ArgumentException($"The cache has Hkv = {kvHeads}, D = {headDim}; the config needs Hkv = {Config.KvHeads}, D = {Config.HeadDim}.", cacheName);
        }
        Context.RequireSame(cacheContext, cacheName);
        RequireContext(input, nameof(input));
        RequireContext(output, nameof(output));
        var inputLayout = ActivationLayout.Of(input.Lengths, input.Strides, Config.ModelDim, nameof(input));
        if (inputLayout.Batch != batch)
        {
            throw new ArgumentException($"input batch {inputLayout.Batch} must equal the cache batch {batch}.", nameof(input));
        }
        if (batch > AttentionForwardPlanner.MaxGridYZ)
        {
            throw new ArgumentException($"input batch {batch} exceeds the {AttentionForwardPlanner.MaxGridYZ} batch entries one decode launch covers.", nameof(input));
        }
        var outputLayout = ActivationLayout.Of(output.Lengths, output.Strides, Config.ModelDim, nameof(output));
        return MultiHeadPlan.Forward(Config, inputLayout, null, outputLayout);
    }

    /// <summary>
    /// Runs the attention engine's own checks (shapes, mask, grid limits) on the views the call will pass it, so a call it
    /// would reject throws here, before the projections are queued.
    /// </summary>
    private void RequireAttentionAccepts(in HeadView query, in HeadView key, in HeadView value, AttentionOptions options)
    {
        nint[] attended = [query.Batch, query.Seq, Config.Heads, Config.HeadDim];
        nint[] attendedStrides = [(nint)query.Seq * QueryWidth, QueryWidth, Config.HeadDim, 1];
        AttentionForwardPlanner.Plan(KernelElementTypes.Of<T>(), new TensorDesc(0, query.Lengths, query.Strides),
            new TensorDesc(0, key.Lengths, key.Strides), new TensorDesc(0, value.Lengths, value.Strides),
            new TensorDesc(0, attended, attendedStrides), null, options, _attention.Variant);
    }

    /// <summary>The attention options of a call with <paramref name="sq"/> queries and <paramref name="sk"/> keys, as the CPU module builds them.</summary>
    private AttentionOptions Options(int sq, int sk) =>
        new AttentionOptions { Scale = Config.Scale, Mask = _masks.For(sq, sk) };

    /// <summary>Frees the weights, the workspace, cuBLAS, the kernel module and an owned stream (waits for the stream first).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try
        {
            Stream.Synchronize();
        }
        catch (CudaException)
        {
            // A failed earlier launch already surfaced (or will) to the caller; freeing must still happen.
        }
        catch (ObjectDisposedException)
        {
            // A borrowed stream or the context is gone: nothing of ours is queued any more.
        }
        _projected?.Dispose();
        _attended?.Dispose();
        _fusedBias?.Dispose();
        _outputBias?.Dispose();
        _fusedWeight.Dispose();
        _outputWeight.Dispose();
        _module.Dispose();
        _attention.Dispose();
        _blas.Dispose();
        if (_ownsStream) Stream.Dispose();
    }

    private void RunProjections(MultiHeadPlan plan, DeviceBuffer<T> input, DeviceBuffer<T>? context, Views views)
    {
        foreach (ProjectionStep step in plan.Projections)
        {
            DeviceBuffer<T> a = step.A == PlanOperand.Context ? context! : input;
            DeviceBuffer<T> c = step.COffset == 0 ? _projected! : views.KvProjected!;
            RunStep(step, a, c);
        }
    }

    /// <summary>Queues one projection: the bias broadcast (when the config has biases), then the GEMM with beta = 1 (0 without bias).</summary>
    private void RunStep(in ProjectionStep step, DeviceBuffer<T> a, DeviceBuffer<T> c)
    {
        bool output = step.Weight == PlanOperand.OutputWeight;
        DeviceBuffer<T> weight = output ? _outputWeight : step.WeightRow == 0 ? _fusedWeight : _kvWeight;
        DeviceBuffer<T>? bias = output ? _outputBias : step.WeightRow == 0 ? _fusedBias : _kvBias;
        float beta = 0f;
        if (bias is not null)
        {
            var (gx, gy, block) = MultiHeadPlan.BiasLaunch((long)step.M * step.Batches, step.N);
            var args = new KernelArguments();
            args.Add(bias.DevicePointer);
            args.Add(c.DevicePointer);
            args.Add((long)step.M * step.Batches);
            args.Add(step.N);
            args.Add((long)step.Ldc);
            args.Add((long)step.M);
            args.Add(step.StrideC);
            _biasKernel.Launch(new LaunchConfig(new Dim3(gx, gy), new Dim3(block)), Stream, ref args);
            beta = 1f;
        }
        if (step.Batches == 1)
        {
            _blas.Gemm(false, true, step.M, step.N, step.K, 1f, a, step.Lda, weight, step.K, beta, c, step.Ldc);
        }
        else
        {
            _blas.GemmStridedBatched(false, true, step.M, step.N, step.K, 1f, a, step.Lda, step.StrideA, weight, step.K, 0,
                beta, c, step.Ldc, step.StrideC, step.Batches);
        }
    }

    /// <summary>Grows the workspace when the plan needs more, then returns the views of the plan's shapes (rebuilt only when they change).</summary>
    private Views Prepare(MultiHeadPlan plan)
    {
        bool grew = false;
        if (_projected is null || _projected.Length < plan.ProjectedElements || _attended is null || _attended.Length < plan.AttendedElements)
        {
            // Work queued earlier may still read the old buffers: wait once, then replace them (warm-up only).
            Stream.Synchronize();
            if (_projected is null || _projected.Length < plan.ProjectedElements)
            {
                _projected?.Dispose();
                _projected = null;
                _projected = DeviceBuffer<T>.Allocate(Context, plan.ProjectedElements);
            }
            if (_attended is null || _attended.Length < plan.AttendedElements)
            {
                _attended?.Dispose();
                _attended = null;
                _attended = DeviceBuffer<T>.Allocate(Context, plan.AttendedElements);
            }
            grew = true;
        }
        var key = (plan.Batch, plan.SeqQ, plan.SeqK, plan.Cross);
        if (grew || _views is null || _views.Shape != key)
        {
            _views = new Views(key,
                Wrap(plan.Query), Wrap(plan.Key), Wrap(plan.Value),
                DeviceTensor<T>.Wrap(Context, _attended!.DevicePointer,
                    [plan.Batch, plan.SeqQ, Config.Heads, Config.HeadDim],
                    [(nint)plan.SeqQ * QueryWidth, QueryWidth, Config.HeadDim, 1]),
                _attended!,
                plan.Cross ? _projected!.Slice(plan.Projections[1].COffset, plan.ProjectedElements - plan.Projections[1].COffset) : null);
        }
        return _views;
    }

    private DeviceTensor<T> Wrap(in HeadView view) =>
        DeviceTensor<T>.Wrap(Context, _projected!.DevicePointer + (nint)(view.Offset * Unsafe.SizeOf<T>()), view.Lengths, view.Strides);

    private void Upload(MultiHeadWeights weights)
    {
        Stream.Synchronize();
        _fusedWeight.CopyFrom(Convert(weights.Fused));
        _outputWeight.CopyFrom(Convert(weights.Output));
        if (Config.Bias)
        {
            _fusedBias!.CopyFrom(Convert(weights.FusedBias));
            _outputBias!.CopyFrom(Convert(weights.OutputBias));
        }
    }

    private static T[] Convert(float[] values)
    {
        var result = new T[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            float v = values[i];
            if (typeof(T) == typeof(float)) result[i] = Unsafe.As<float, T>(ref v);
            else if (typeof(T) == typeof(Half))
            {
                Half h = (Half)v;
                result[i] = Unsafe.As<Half, T>(ref h);
            }
            else
            {
                BFloat16 b = (BFloat16)v;
                result[i] = Unsafe.As<BFloat16, T>(ref b);
            }
        }
        return result;
    }

    private void RequireContext(DeviceTensor<T> tensor, string name) => Context.RequireSame(tensor.Context, name);

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private static TItem Track<TItem>(List<IDisposable> created, TItem item) where TItem : IDisposable
    {
        created.Add(item);
        return item;
    }

    /// <summary>The attention views of one call shape into the current workspace.</summary>
    private sealed record Views((int Batch, int Sq, int Sk, bool Cross) Shape,
        DeviceTensor<T> Query, DeviceTensor<T> Key, DeviceTensor<T> Value, DeviceTensor<T> Attended,
        DeviceBuffer<T> AttendedBuffer, DeviceBuffer<T>? KvProjected);
}
