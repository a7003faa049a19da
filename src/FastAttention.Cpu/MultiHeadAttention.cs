// Multi-head attention module: Q/K/V/O projections around the attention engine, with KV caches.
using System.Numerics.Tensors;
using FastAttention.Cpu.Caching;

namespace FastAttention.Cpu;

/// <summary>
/// Multi-head attention as an inference stack calls it: <c>out = Wo · Attention(Wq·x, Wk·c, Wv·c) + bo</c>
/// with self-attention (c = x), cross-attention (c = a separate context), causal and sliding-window
/// masks, block-sparse patterns and padding, probabilities on request, and incremental decoding over a
/// contiguous or paged KV cache that matches the full causal forward. fp32; the Q, K and V projections
/// run as one fused GEMM whose output the attention reads in place through strided views.
/// </summary>
/// <remarks>
/// Weights follow PyTorch's <c>Linear</c>: row-major <c>[out, in]</c>. Not thread-safe: one call at a time
/// per instance (it reuses its scratch buffers, so steady-state calls do not allocate them again).
/// </remarks>
public sealed class MultiHeadAttention
{
    private const uint FileMagic = 0x3148_4D46; // "FMH1"
    private readonly float[] _wqkv, _bqkv, _wo, _bo;
    private readonly IAttentionBackend _backend;
    private readonly int _parallelism;
    private float[] _projected = [], _attended = [], _inputCopy = [], _contextCopy = [], _outputCopy = [];
    private readonly ModuleMasks _masks;

    /// <summary>Creates a module with zero weights (set them with <see cref="SetWeights"/>, <see cref="LoadWeights"/> or <see cref="InitializeRandom"/>).</summary>
    /// <param name="config">Shapes and behaviour.</param>
    /// <param name="backend">Compute backend; null = <see cref="CpuBackend"/>.</param>
    /// <param name="maxDegreeOfParallelism">Worker threads for attention; -1 = all processors.</param>
    /// <exception cref="ArgumentNullException"><paramref name="config"/> is null.</exception>
    /// <exception cref="ArgumentException">The head dim exceeds <see cref="CpuAttention.MaxHeadDim"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxDegreeOfParallelism"/> is 0 or below -1.</exception>
    public MultiHeadAttention(AttentionConfig config, IAttentionBackend? backend = null, int maxDegreeOfParallelism = -1)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (maxDegreeOfParallelism == 0 || maxDegreeOfParallelism < -1)
        {
            throw new ArgumentOutOfRangeException(nameof(maxDegreeOfParallelism), maxDegreeOfParallelism, "must be -1 or >= 1.");
        }
        if (config.HeadDim > CpuAttention.MaxHeadDim)
        {
            throw new ArgumentException(
                $"config.HeadDim = {config.HeadDim} exceeds the CPU engine's maximum of {CpuAttention.MaxHeadDim} (decode and the CPU backend run on it).", nameof(config));
        }
        Config = config;
        _masks = new ModuleMasks(config);
        _parallelism = maxDegreeOfParallelism;
        _backend = backend ?? new CpuBackend(maxDegreeOfParallelism);
        _wqkv = new float[FusedWidth * config.ModelDim];
        _bqkv = config.Bias ? new float[FusedWidth] : [];
        _wo = new float[config.ModelDim * QueryWidth];
        _bo = config.Bias ? new float[config.ModelDim] : [];
    }

    /// <summary>The configuration.</summary>
    public AttentionConfig Config { get; }

    private int QueryWidth => Config.Heads * Config.HeadDim;
    private int KvWidth => Config.KvHeads * Config.HeadDim;
    private int FusedWidth => QueryWidth + 2 * KvWidth;

    /// <summary>Wq, <c>[H·D, modelDim]</c>.</summary>
    public ReadOnlySpan<float> QueryWeight => _wqkv.AsSpan(0, QueryWidth * Config.ModelDim);
    /// <summary>Wk, <c>[Hkv·D, modelDim]</c>.</summary>
    public ReadOnlySpan<float> KeyWeight => _wqkv.AsSpan(QueryWidth * Config.ModelDim, KvWidth * Config.ModelDim);
    /// <summary>Wv, <c>[Hkv·D, modelDim]</c>.</summary>
    public ReadOnlySpan<float> ValueWeight => _wqkv.AsSpan((QueryWidth + KvWidth) * Config.ModelDim, KvWidth * Config.ModelDim);
    /// <summary>Wo, <c>[modelDim, H·D]</c>.</summary>
    public ReadOnlySpan<float> OutputWeight => _wo;
    /// <summary>bq, <c>[H·D]</c> (empty without biases).</summary>
    public ReadOnlySpan<float> QueryBias => Config.Bias ? _bqkv.AsSpan(0, QueryWidth) : default;
    /// <summary>bk, <c>[Hkv·D]</c> (empty without biases).</summary>
    public ReadOnlySpan<float> KeyBias => Config.Bias ? _bqkv.AsSpan(QueryWidth, KvWidth) : default;
    /// <summary>bv, <c>[Hkv·D]</c> (empty without biases).</summary>
    public ReadOnlySpan<float> ValueBias => Config.Bias ? _bqkv.AsSpan(QueryWidth + KvWidth, KvWidth) : default;
    /// <summary>bo, <c>[modelDim]</c> (empty without biases).</summary>
    public ReadOnlySpan<float> OutputBias => _bo;

    /// <summary>Sets every weight (copied). Biases must be given exactly when the config has them.</summary>
    /// <exception cref="ArgumentException">A weight or bias has the wrong length (message names it and the numbers), or biases are given/missing against <see cref="AttentionConfig.Bias"/>. Nothing changes.</exception>
    public void SetWeights(ReadOnlySpan<float> query, ReadOnlySpan<float> key, ReadOnlySpan<float> value, ReadOnlySpan<float> output,
        ReadOnlySpan<float> queryBias = default, ReadOnlySpan<float> keyBias = default, ReadOnlySpan<float> valueBias = default, ReadOnlySpan<float> outputBias = default)
    {
        int model = Config.ModelDim;
        RequireLength(query, QueryWidth * model, nameof(query), $"[H·D = {QueryWidth}, modelDim = {model}]");
        RequireLength(key, KvWidth * model, nameof(key), $"[Hkv·D = {KvWidth}, modelDim = {model}]");
        RequireLength(value, KvWidth * model, nameof(value), $"[Hkv·D = {KvWidth}, modelDim = {model}]");
        RequireLength(output, model * QueryWidth, nameof(output), $"[modelDim = {model}, H·D = {QueryWidth}]");
        int biasLength = Config.Bias ? 1 : 0;
        RequireLength(queryBias, biasLength * QueryWidth, nameof(queryBias), Config.Bias ? $"[{QueryWidth}]" : "empty (config has no bias)");
        RequireLength(keyBias, biasLength * KvWidth, nameof(keyBias), Config.Bias ? $"[{KvWidth}]" : "empty (config has no bias)");
        RequireLength(valueBias, biasLength * KvWidth, nameof(valueBias), Config.Bias ? $"[{KvWidth}]" : "empty (config has no bias)");
        RequireLength(outputBias, biasLength * model, nameof(outputBias), Config.Bias ? $"[{model}]" : "empty (config has no bias)");
        query.CopyTo(_wqkv);
        key.CopyTo(_wqkv.AsSpan(QueryWidth * model));
        value.CopyTo(_wqkv.AsSpan((QueryWidth + KvWidth) * model));
        output.CopyTo(_wo);
        if (Config.Bias)
        {
            queryBias.CopyTo(_bqkv);
            keyBias.CopyTo(_bqkv.AsSpan(QueryWidth));
            valueBias.CopyTo(_bqkv.AsSpan(QueryWidth + KvWidth));
            outputBias.CopyTo(_bo);
        }
    }

    /// <summary>Xavier-uniform weights (U(-a, a), a = sqrt(6 / (in + out)) per matrix) and zero biases from a seed (reproducible).</summary>
    public void InitializeRandom(int seed)
    {
        var random = new Random(seed);
        int model = Config.ModelDim;
        Fill(_wqkv.AsSpan(0, QueryWidth * model), random, Xavier(model, QueryWidth));
        Fill(_wqkv.AsSpan(QueryWidth * model), random, Xavier(model, KvWidth));
        Fill(_wo, random, Xavier(QueryWidth, model));
        Array.Clear(_bqkv);
        Array.Clear(_bo);
    }

    /// <summary>Writes the weights: a small header (magic, modelDim, H, Hkv, D, bias flag) then fp32 little-endian arrays Wq, Wk, Wv, Wo, [bq, bk, bv, bo].</summary>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    public void SaveWeights(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        writer.Write(FileMagic);
        foreach (int v in Header()) writer.Write(v);
        foreach (var array in new[] { _wqkv, _wo, _bqkv, _bo })
        {
            writer.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(array.AsSpan()));
        }
    }

    /// <summary>Reads weights written by <see cref="SaveWeights"/> for the same shapes.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="InvalidDataException">The stream is not a weight file, or its shapes differ from <see cref="Config"/> (message has both); nothing changes.</exception>
    public void LoadWeights(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var reader = new BinaryReader(stream, System.Text.Encoding.UTF8, leaveOpen: true);
        try
        {
            if (reader.ReadUInt32() != FileMagic) throw new InvalidDataException("Not a FastAttention multi-head attention weight file (bad magic).");
            int[] expected = Header(), found = new int[expected.Length];
            for (int i = 0; i < found.Length; i++) found[i] = reader.ReadInt32();
            if (!found.AsSpan().SequenceEqual(expected))
            {
                throw new InvalidDataException(
                    $"Weight file shapes (modelDim, H, Hkv, D, bias) = ({string.Join(", ", found)}) differ from the module's ({string.Join(", ", expected)}).");
            }
            var staged = new[] { _wqkv, _wo, _bqkv, _bo }.Select(a => new float[a.Length]).ToArray();
            foreach (var array in staged)
            {
                var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(array.AsSpan());
                reader.BaseStream.ReadExactly(bytes);
            }
            staged[0].CopyTo(_wqkv);
            staged[1].CopyTo(_wo);
            staged[2].CopyTo(_bqkv);
            staged[3].CopyTo(_bo);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("The weight file ends early.", e);
        }
    }

    /// <summary>
    /// Full forward. Self-attention when <paramref name="context"/> is omitted (<c>default</c>), otherwise
    /// cross-attention: queries from <paramref name="input"/>, keys and values from <paramref name="context"/>.
    /// </summary>
    /// <param name="input">x, <c>[B, Sq, modelDim]</c>.</param>
    /// <param name="output"><c>[B, Sq, modelDim]</c>; must not overlap <paramref name="input"/>.</param>
    /// <param name="context">Optional <c>[B, Sk, modelDim]</c> for cross-attention.</param>
    /// <param name="keyLengths">Optional valid lengths of the keys per sequence (padding), <c>[B]</c>.</param>
    /// <param name="queryLengths">Optional valid lengths of the queries per sequence, <c>[B]</c>; padded query rows output the projection of zeros (the output bias).</param>
    /// <param name="probabilities">Optional <c>[B, H, Sq, Sk]</c> attention weights.</param>
    /// <exception cref="ArgumentException">Shapes that do not match the config or each other, lengths out of range, a wrong destination. Nothing is written.</exception>
    public void Forward(ReadOnlyTensorSpan<float> input, TensorSpan<float> output, ReadOnlyTensorSpan<float> context = default,
        int[]? keyLengths = null, int[]? queryLengths = null, TensorSpan<float> probabilities = default)
    {
        bool cross = context.Rank != 0;
        var (batch, sq) = RequireActivations(input, nameof(input));
        int sk = sq;
        if (cross)
        {
            (int cb, sk) = RequireActivations(context, nameof(context));
            if (cb != batch) throw new ArgumentException($"context batch {cb} must equal input batch {batch}.", nameof(context));
        }
        AttentionShape.RequireDestination(output, [batch, sq, Config.ModelDim], nameof(output), "[B, Sq, modelDim]");
        var shape = new AttentionShape(batch, sq, sk, Config.Heads, Config.KvHeads, Config.HeadDim);
        shape.RequireMaskFits(new AttentionMask { KeyLengths = keyLengths }, nameof(keyLengths));
        shape.RequireMaskFits(new AttentionMask { QueryLengths = queryLengths }, nameof(queryLengths));
        var baseOptions = Options(sq, sk);
        var options = baseOptions with { Mask = baseOptions.Mask with { KeyLengths = keyLengths, QueryLengths = queryLengths } };
        if (probabilities.Rank != 0)
        {
            AttentionShape.RequireDestination(probabilities, [batch, Config.Heads, sq, sk], nameof(probabilities), "[B, H, Sq, Sk]");
        }

        int model = Config.ModelDim, d = Config.HeadDim;
        input = Contiguous(input, ref _inputCopy);
        if (cross) context = Contiguous(context, ref _contextCopy);
        TensorSpan<float> q, k, v;
        if (!cross)
        {
            var qkv = Buffer(ref _projected, batch * sq * FusedWidth);
            _backend.Linear(input, _wqkv, _bqkv, Tensor(qkv, [batch, sq, FusedWidth]));
            q = Heads(qkv, 0, batch, sq, Config.Heads, FusedWidth);
            k = Heads(qkv, QueryWidth, batch, sq, Config.KvHeads, FusedWidth);
            v = Heads(qkv, QueryWidth + KvWidth, batch, sq, Config.KvHeads, FusedWidth);
        }
        else
        {
            int qSize = batch * sq * QueryWidth, kvSize = batch * sk * 2 * KvWidth;
            var all = Buffer(ref _projected, qSize + kvSize);
            var qBuf = all[..qSize];
            var kvBuf = all.Slice(qSize, kvSize);
            _backend.Linear(input, _wqkv.AsSpan(0, QueryWidth * model), Config.Bias ? _bqkv.AsSpan(0, QueryWidth) : default, Tensor(qBuf, [batch, sq, QueryWidth]));
            _backend.Linear(context, _wqkv.AsSpan(QueryWidth * model), Config.Bias ? _bqkv.AsSpan(QueryWidth) : default, Tensor(kvBuf, [batch, sk, 2 * KvWidth]));
            q = Heads(qBuf, 0, batch, sq, Config.Heads, QueryWidth);
            k = Heads(kvBuf, 0, batch, sk, Config.KvHeads, 2 * KvWidth);
            v = Heads(kvBuf, KvWidth, batch, sk, Config.KvHeads, 2 * KvWidth);
        }
        var attended = Buffer(ref _attended, batch * sq * QueryWidth);
        _backend.Attention(q, k, v, TensorLayouts.Bshd(attended, batch, sq, Config.Heads, d), options, probabilities);
        Project(attended, batch, sq, output);
    }

    /// <summary>
    /// Incremental forward over a contiguous cache: projects the <c>n</c> new tokens, appends their keys
    /// and values to <paramref name="cache"/>, and attends from them to everything cached (causal when the
    /// config is). Token by token or in chunks, the outputs equal the full causal forward.
    /// </summary>
    /// <param name="input">New tokens, <c>[B, n, modelDim]</c>.</param>
    /// <param name="output"><c>[B, n, modelDim]</c>.</param>
    /// <param name="cache">A cache with B = input batch, Hkv and D of the config.</param>
    /// <exception cref="ArgumentException">Shapes that do not match, a cache that would overflow (nothing appended, nothing written), or a block-sparse config (not supported with a cache).</exception>
    public void Forward(ReadOnlyTensorSpan<float> input, TensorSpan<float> output, KvCache<float> cache)
    {
        ArgumentNullException.ThrowIfNull(cache);
        var (batch, n) = PrepareIncremental(input, output, cache.Batch, cache.KvHeads, cache.HeadDim, nameof(cache));
        cache.RequireRoom(n, nameof(cache));
        var qkv = ProjectNew(input, batch, n);
        cache.Append(Heads(qkv, QueryWidth, batch, n, Config.KvHeads, FusedWidth), Heads(qkv, QueryWidth + KvWidth, batch, n, Config.KvHeads, FusedWidth));
        var attended = Buffer(ref _attended, batch * n * QueryWidth);
        CpuAttention.Decode(Heads(qkv, 0, batch, n, Config.Heads, FusedWidth), cache, TensorLayouts.Bshd(attended, batch, n, Config.Heads, Config.HeadDim), Options(0, 0));
        Project(attended, batch, n, output);
    }

    /// <summary>Incremental forward over a paged cache: batch entry b appends to and reads sequence <c>sequences[b]</c>.</summary>
    /// <param name="input">New tokens, <c>[B, n, modelDim]</c>.</param>
    /// <param name="output"><c>[B, n, modelDim]</c>.</param>
    /// <param name="cache">The paged cache (Hkv and D of the config).</param>
    /// <param name="sequences">Live sequence ids, <c>[B]</c>.</param>
    /// <exception cref="ArgumentException">Shapes that do not match, a dead sequence id, or a block-sparse config.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The pool has too few free pages for the whole batch (nothing appended, nothing written).</exception>
    public void Forward(ReadOnlyTensorSpan<float> input, TensorSpan<float> output, PagedKvCache<float> cache, ReadOnlySpan<int> sequences)
    {
        ArgumentNullException.ThrowIfNull(cache);
        var (batch, n) = PrepareIncremental(input, output, sequences.Length, cache.KvHeads, cache.HeadDim, nameof(cache));
        foreach (int s in sequences)
        {
            if (!cache.Allocator.Sequences.Contains(s)) throw new ArgumentException($"Sequence {s} is not live in the cache.", nameof(sequences));
        }
        if (sequences.ToArray().Distinct().Count() != sequences.Length)
        {
            throw new ArgumentException("sequences must be distinct.", nameof(sequences));
        }
        int needed = PagesForBatch(cache.Allocator, sequences, n);
        if (needed > cache.Allocator.FreePages)
        {
            throw new ArgumentOutOfRangeException(nameof(cache), $"The batch needs {needed} free pages; the pool has {cache.Allocator.FreePages}. Nothing was appended.");
        }
        var qkv = ProjectNew(input, batch, n);
        for (int b = 0; b < batch; b++)
        {
            int row = b * n * FusedWidth;
            cache.Append(sequences[b], Tokens(qkv, row + QueryWidth, n), Tokens(qkv, row + QueryWidth + KvWidth, n));
        }
        var attended = Buffer(ref _attended, batch * n * QueryWidth);
        CpuAttention.Decode(Heads(qkv, 0, batch, n, Config.Heads, FusedWidth), cache, sequences, TensorLayouts.Bshd(attended, batch, n, Config.Heads, Config.HeadDim), Options(0, 0));
        Project(attended, batch, n, output);
    }

    /// <summary>
    /// Free pages the batch's appends take, in order: new pages plus copy-on-write copies. When all r
    /// holders of a shared, partly filled last page append, only the first r - 1 copy it; the last
    /// one then owns it and writes in place.
    /// </summary>
    private static int PagesForBatch(FastAttention.Caching.PageAllocator allocator, ReadOnlySpan<int> sequences, int tokens)
    {
        if (tokens == 0) return 0;
        int needed = 0;
        var sharedHolders = new Dictionary<int, int>();
        foreach (int s in sequences)
        {
            int pages = allocator.PagesNeeded(s, tokens);
            var table = allocator.BlockTable(s);
            if (allocator.Length(s) % allocator.PageSize != 0 && allocator.RefCount(table[^1]) > 1)
            {
                pages--;   // the copy is counted per shared page below
                sharedHolders[table[^1]] = sharedHolders.GetValueOrDefault(table[^1]) + 1;
            }
            needed += pages;
        }
        foreach (var (page, holders) in sharedHolders)
        {
            int refs = allocator.RefCount(page);
            needed += holders < refs ? holders : refs - 1;
        }
        return needed;
    }

    private (int Batch, int N) PrepareIncremental(ReadOnlyTensorSpan<float> input, TensorSpan<float> output, int batch, int kvHeads, int headDim, string cacheName)
    {
        if (Config.Sparse != SparsePattern.None)
        {
            throw new ArgumentException($"Block-sparse pattern {Config.Sparse} is not supported with a KV cache; use a dense config (a sliding window is supported).", cacheName);
        }
        if (kvHeads != Config.KvHeads || headDim != Config.HeadDim)
        {
            throw new ArgumentException($"The cache has Hkv = {kvHeads}, D = {headDim}; the config needs Hkv = {Config.KvHeads}, D = {Config.HeadDim}.", cacheName);
        }
        var (b, n) = RequireActivations(input, nameof(input));
        if (b != batch) throw new ArgumentException($"input batch {b} must equal the cache batch {batch}.", nameof(input));
        AttentionShape.RequireDestination(output, [b, n, Config.ModelDim], nameof(output), "[B, n, modelDim]");
        return (b, n);
    }

    private Span<float> ProjectNew(ReadOnlyTensorSpan<float> input, int batch, int n)
    {
        var qkv = Buffer(ref _projected, batch * n * FusedWidth);
        _backend.Linear(Contiguous(input, ref _inputCopy), _wqkv, _bqkv, Tensor(qkv, [batch, n, FusedWidth]));
        return qkv;
    }

    /// <summary>output = attended · Woᵀ + bo; a strided output is filled from a contiguous staging buffer.</summary>
    private void Project(Span<float> attended, int batch, int seq, TensorSpan<float> output)
    {
        var source = Tensor(attended, [batch, seq, QueryWidth]);
        if (IsContiguous(output.Lengths, output.Strides))
        {
            _backend.Linear(source, _wo, _bo, output);
            return;
        }
        var staged = Tensor(Buffer(ref _outputCopy, batch * seq * Config.ModelDim), [batch, seq, Config.ModelDim]);
        _backend.Linear(source, _wo, _bo, staged);
        staged.CopyTo(output);
    }

    /// <summary>The tensor itself when it is contiguous <c>[B, S, F]</c>, else a contiguous copy in <paramref name="copy"/>.</summary>
    private static ReadOnlyTensorSpan<float> Contiguous(ReadOnlyTensorSpan<float> t, ref float[] copy)
    {
        if (IsContiguous(t.Lengths, t.Strides)) return t;
        var lengths = t.Lengths.ToArray();
        var dense = Tensor(Buffer(ref copy, (int)t.FlattenedLength), lengths);
        t.CopyTo(dense);
        return dense;
    }

    private static bool IsContiguous(ReadOnlySpan<nint> lengths, ReadOnlySpan<nint> strides)
    {
        nint expected = 1;
        for (int i = lengths.Length - 1; i >= 0; i--)
        {
            if (lengths[i] > 1 && strides[i] != expected) return false;
            expected *= lengths[i];
        }
        return true;
    }

    private AttentionOptions Options(int sq, int sk) =>
        new AttentionOptions { Scale = Config.Scale, Mask = _masks.For(sq, sk), MaxDegreeOfParallelism = _parallelism };

    private (int Batch, int Seq) RequireActivations(ReadOnlyTensorSpan<float> t, string name)
    {
        if (t.Rank != 3 || t.Lengths[2] != Config.ModelDim || t.Lengths[0] < 1 || t.Lengths[1] < 1)
        {
            throw new ArgumentException(
                $"{name} must be [B >= 1, S >= 1, modelDim = {Config.ModelDim}], got [{AttentionShape.Join(t.Lengths)}].", name);
        }
        return ((int)t.Lengths[0], (int)t.Lengths[1]);
    }

    /// <summary>A <c>[B, S, heads, D]</c> view of columns <c>[offset, offset + heads·D)</c> of a <c>[B·S, width]</c> buffer.</summary>
    private TensorSpan<float> Heads(Span<float> buffer, int offset, int batch, int seq, int heads, int width) =>
        TensorLayouts.View(buffer[offset..], [batch, seq, heads, Config.HeadDim],
            [(nint)seq * width, width, Config.HeadDim, 1]);

    /// <summary>A <c>[n, Hkv, D]</c> view of one sequence's new keys or values inside the fused projection.</summary>
    private TensorSpan<float> Tokens(Span<float> qkv, int offset, int n) =>
        TensorLayouts.View(qkv[offset..], [n, Config.KvHeads, Config.HeadDim], [FusedWidth, Config.HeadDim, 1]);

    private static TensorSpan<float> Tensor(Span<float> buffer, ReadOnlySpan<nint> lengths) =>
        TensorLayouts.View(buffer, lengths, lengths.Length == 3 ? [lengths[1] * lengths[2], lengths[2], 1] : [lengths[1], 1]);

    private static Span<float> Buffer(ref float[] buffer, int length)
    {
        if (buffer.Length < length) buffer = GC.AllocateUninitializedArray<float>(length);
        return buffer.AsSpan(0, length);
    }

    private int[] Header() => [Config.ModelDim, Config.Heads, Config.KvHeads, Config.HeadDim, Config.Bias ? 1 : 0];

    private static float Xavier(int fanIn, int fanOut) => MathF.Sqrt(6f / (fanIn + fanOut));

    private static void Fill(Span<float> array, Random random, float limit)
    {
        for (int i = 0; i < array.Length; i++) array[i] = (float)(random.NextDouble() * 2 - 1) * limit;
    }

    private static void RequireLength(ReadOnlySpan<float> span, int expected, string name, string layout)
    {
        if (span.Length != expected)
        {
            throw new ArgumentException($"{name} has {span.Length} elements; expected {expected} ({layout}).", name);
        }
    }
}
