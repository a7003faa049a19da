// GPU decode attention over device KV caches: validation, split planning, block-table upload and the launches
// (decode kernel, then the split combine when the context is partitioned).
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Gpu;

/// <summary>
/// Decode attention on the GPU over <see cref="CudaPagedKvCache{T}"/> and <see cref="CudaKvCache{T}"/>, with the
/// semantics of <c>CpuAttention.Decode</c>: the <c>q</c> query rows of each batch entry are its last <c>q</c>
/// positions (bottom-right aligned: row <c>i</c> is position <c>length - q + i</c>), attending to the cached tokens
/// under the options' causal flag and sliding window; GQA/MQA through <c>H % Hkv == 0</c>; a row that sees no key
/// gives zeros and LSE = -inf. Append the new tokens' keys and values to the cache first. Split-KV (flash-decoding):
/// <see cref="DecodePlanner"/> partitions long contexts across blocks and a combine kernel merges the partitions by
/// log-sum-exp. No device memory is allocated per call once the cache's staging and scratch have grown to the
/// largest batch seen. Work is queued on the stream; the call does not wait for it.
/// </summary>
public static class CudaDecode
{
    private const float Log2E = 1.44269504088896341f;

    /// <summary>Decode over a paged device cache; batch entry <c>b</c> reads sequence <c>sequences[b]</c>.</summary>
    /// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/> (the cache's type).</typeparam>
    /// <param name="query">Q, <c>[B, q, H, D]</c>, D contiguous (other strides free).</param>
    /// <param name="cache">The paged cache.</param>
    /// <param name="sequences">Live sequence ids, <c>[B]</c>.</param>
    /// <param name="output">O, <c>[B, q, H, D]</c>, D contiguous.</param>
    /// <param name="options">Scale, causal flag and sliding window (lengths come from the cache: no key/query lengths, no block mask).</param>
    /// <param name="logSumExp">Optional fp32 <c>[B, H, q]</c> (natural log), any strides.</param>
    /// <param name="decodeOptions">Softcap, kernel version, forced split count; null = defaults.</param>
    /// <param name="stream">Stream to queue on; null = the legacy default stream.</param>
    /// <exception cref="ArgumentNullException"><paramref name="query"/>, <paramref name="cache"/> or <paramref name="output"/> is null.</exception>
    /// <exception cref="ArgumentException">A sequence id that does not exist, shapes that do not match the cache or each other,
    /// a non-contiguous D axis, a mask field decode does not take, or a tensor or stream of another context. Nothing is queued.</exception>
    public static void Decode<T>(DeviceTensor<T> query, CudaPagedKvCache<T> cache, ReadOnlySpan<int> sequences, DeviceTensor<T> output,
        AttentionOptions? options = null, DeviceTensor<float>? logSumExp = null, GpuDecodeOptions? decodeOptions = null, CudaStream? stream = null)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(cache);
        stream ??= cache.DefaultStream;
        var args = Validate(query, output, logSumExp, options, decodeOptions, stream, cache.Store, sequences.Length);
        int batch = sequences.Length;
        int stride = DecodePlanner.TableStride(cache.Allocator, sequences);
        var host = cache.Store.Staging.Begin(batch + batch * stride, stream);
        DecodePlanner.PackBlockTables(cache.Allocator, sequences, stride, host[..batch], host[batch..]);
        int maxLength = 0;
        foreach (int length in host[..batch]) maxLength = Math.Max(maxLength, length);
        nint device = cache.Store.Staging.Upload(batch + batch * stride, stream);
        Launch(args, cache.Store, query, output, logSumExp, stream, device + batch * sizeof(int), stride, device, maxLength);
    }

    /// <summary>Decode over a contiguous device cache (batch entry b is the cache's sequence b).</summary>
    /// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/> (the cache's type).</typeparam>
    /// <param name="query">Q, <c>[B, q, H, D]</c> with B = <see cref="CudaKvCache{T}.Batch"/>, D contiguous.</param>
    /// <param name="cache">The contiguous cache.</param>
    /// <param name="output">O, <c>[B, q, H, D]</c>, D contiguous.</param>
    /// <param name="options">Scale, causal flag and sliding window (no key/query lengths, no block mask).</param>
    /// <param name="logSumExp">Optional fp32 <c>[B, H, q]</c>, any strides.</param>
    /// <param name="decodeOptions">Softcap, kernel version, forced split count; null = defaults.</param>
    /// <param name="stream">Stream to queue on; null = the legacy default stream.</param>
    /// <exception cref="ArgumentNullException"><paramref name="query"/>, <paramref name="cache"/> or <paramref name="output"/> is null.</exception>
    /// <exception cref="ArgumentException">Shapes that do not match the cache or each other, a non-contiguous D axis, a mask field
    /// decode does not take, or a tensor or stream of another context. Nothing is queued.</exception>
    public static void Decode<T>(DeviceTensor<T> query, CudaKvCache<T> cache, DeviceTensor<T> output,
        AttentionOptions? options = null, DeviceTensor<float>? logSumExp = null, GpuDecodeOptions? decodeOptions = null, CudaStream? stream = null)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(cache);
        stream ??= cache.DefaultStream;
        var args = Validate(query, output, logSumExp, options, decodeOptions, stream, cache.Store, cache.Batch);
        int batch = cache.Batch;
        var host = cache.Store.Staging.Begin(batch, stream);
        cache.Lengths.CopyTo(host);
        int maxLength = 0;
        foreach (int length in cache.Lengths) maxLength = Math.Max(maxLength, length);
        nint device = cache.Store.Staging.Upload(batch, stream);
        Launch(args, cache.Store, query, output, logSumExp, stream, cache.Tables, cache.TableStride, device, maxLength);
    }

    private readonly record struct Args(int Batch, int QueryLength, int Heads, float Scale, AttentionMask Mask, GpuDecodeOptions Options);

    private static Args Validate<T>(DeviceTensor<T> query, DeviceTensor<T> output, DeviceTensor<float>? lse, AttentionOptions? options,
        GpuDecodeOptions? decodeOptions, CudaStream stream, DeviceKvStore<T> store, int batch) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(output);
        options ??= AttentionOptions.Default;
        decodeOptions ??= GpuDecodeOptions.Default;
        var context = store.Context;
        context.RequireSame(query.Context, nameof(query));
        context.RequireSame(output.Context, nameof(output));
        context.RequireSame(stream.Context, nameof(stream));
        if (query.Rank != 4)
        {
            throw new ArgumentException($"query must be rank 4 [B, q, H, D], got rank {query.Rank}.", nameof(query));
        }
        var l = query.Lengths;
        if (l[0] < 1)
        {
            throw new ArgumentException($"query dimension 0 (batch) has size {l[0]}; decode needs at least one sequence.", nameof(query));
        }
        if (l[0] != batch || l[1] < 1 || l[3] != store.HeadDim || l[2] < 1 || l[2] % store.KvHeads != 0)
        {
            throw new ArgumentException(
                $"query [{string.Join(", ", l.ToArray())}] must be [B = {batch}, q >= 1, H (a multiple of Hkv = {store.KvHeads}), D = {store.HeadDim}].", nameof(query));
        }
        if (l[0] > DecodePlanner.MaxGridYz)
        {
            throw new ArgumentException($"query batch {l[0]} exceeds the {DecodePlanner.MaxGridYz} batch entries one launch covers.", nameof(query));
        }
        var mask = options.Mask;
        if (mask.KeyLengths is not null || mask.QueryLengths is not null || mask.BlockMask is not null)
        {
            throw new ArgumentException(
                "Decode takes lengths from the cache and has no block-sparse layout: Mask.KeyLengths, Mask.QueryLengths and Mask.BlockMask must be null.", nameof(options));
        }
        TokenSource.RequireShape(output, [l[0], l[1], l[2], l[3]], "[B, q, H, D] as query", nameof(output));
        RequireContiguousD(query, nameof(query));
        RequireContiguousD(output, nameof(output));
        if (lse is not null)
        {
            context.RequireSame(lse.Context, "logSumExp");
            TokenSource.RequireShape(lse, [l[0], l[2], l[1]], "[B, H, q]", "logSumExp");
        }
        return new Args((int)l[0], (int)l[1], (int)l[2], options.ResolveScale(store.HeadDim), mask, decodeOptions);
    }

    private static void RequireContiguousD<T>(DeviceTensor<T> tensor, string paramName) where T : unmanaged
    {
        if (tensor.Strides[3] != 1)
        {
            throw new ArgumentException($"{paramName} {tensor}: the D axis must be contiguous (stride 1), got stride {tensor.Strides[3]}.", paramName);
        }
    }

    private static void Launch<T>(Args a, DeviceKvStore<T> store, DeviceTensor<T> query, DeviceTensor<T> output, DeviceTensor<float>? lse,
        CudaStream stream, nint tables, int tableStride, nint lengths, int maxLength) where T : unmanaged
    {
        int group = a.Heads / store.KvHeads, d = store.HeadDim;
        bool plain = a.Options.Kernel == DecodeKernel.Plain;
        var device = store.Context.Device;
        var plan = DecodePlanner.Plan(a.Batch, store.KvHeads, a.QueryLength * group, maxLength, store.PageSize,
            device.MultiprocessorCount, store.BlocksPerMultiprocessor, a.Options.Splits);
        float softcap = a.Options.Softcap;
        var p = new DecodeParams
        {
            Q = query.DevicePointer, KPool = store.Keys.DevicePointer, VPool = store.Values.DevicePointer,
            BlockTables = tables, SeqLens = lengths, O = output.DevicePointer, Lse = lse?.DevicePointer ?? 0,
            QStrideB = query.Strides[0], QStrideS = query.Strides[1], QStrideH = query.Strides[2],
            OStrideB = output.Strides[0], OStrideS = output.Strides[1], OStrideH = output.Strides[2],
            LseStrideB = lse?.Strides[0] ?? 0, LseStrideH = lse?.Strides[1] ?? 0, LseStrideS = lse?.Strides[2] ?? 0,
            KvHeadStride = store.HeadStride, PageStride = store.PageStride,
            Batch = a.Batch, QLen = a.QueryLength, Heads = a.Heads, KvHeads = store.KvHeads, Group = group,
            TableStride = tableStride, PageShift = store.PageShift,
            Causal = a.Mask.Causal ? 1 : 0, WindowLeft = a.Mask.WindowLeft, WindowRight = a.Mask.WindowRight,
            NumSplits = plan.Splits, KeysPerSplit = plan.KeysPerSplit, RowChunks = plan.RowChunks,
            ScaleLog2 = a.Scale * Log2E,
            Softcap = softcap, SoftcapLog2 = softcap * Log2E, ScaleOverSoftcap = softcap > 0 ? a.Scale / softcap : 0,
        };
        if (plan.Splits > 1)
        {
            long rows = (long)a.Batch * a.Heads * a.QueryLength * plan.Splits;
            var scratch = store.Scratch(rows * (d + 1), stream);
            p.PartO = scratch.DevicePointer;
            p.PartLse = scratch.DevicePointer + (nint)(rows * d * sizeof(float));
        }
        var args = new KernelArguments();
        args.Add(p);
        var config = plain
            ? new LaunchConfig(new Dim3((uint)a.Heads, (uint)a.Batch, (uint)plan.Splits), 128)
            : new LaunchConfig(new Dim3((uint)store.KvHeads, (uint)a.Batch, (uint)(plan.RowChunks * plan.Splits)), 128);
        store.GetDecodeKernel(a.Options.Kernel).Launch(config, stream, ref args);
        if (plan.Splits > 1)
        {
            long outputRows = (long)a.Batch * a.Heads * a.QueryLength;
            var combine = new KernelArguments();
            combine.Add(p);
            store.CombineKernel.Launch(new LaunchConfig((uint)((outputRows + 3) / 4), 128), stream, ref combine);
        }
    }
}
