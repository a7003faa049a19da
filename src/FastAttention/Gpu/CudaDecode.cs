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
    /// a non-contiguous D axis, a mask field decode does not take, more query rows per KV head (q x H/Hkv) than one launch covers
    /// (65535 x 8), or a tensor or stream of another context. Nothing is queued.</exception>
    public static void Decode<T>(DeviceTensor<T> query, CudaPagedKvCache<T> cache, ReadOnlySpan<int> sequences, DeviceTensor<T> output,
        AttentionOptions? options = null, DeviceTensor<float>? logSumExp = null, GpuDecodeOptions? decodeOptions = null, CudaStream? stream = null)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(cache);
        stream ??= cache.DefaultStream;
        var args = Validate(query, output, logSumExp, options, decodeOptions, stream, cache.Store, sequences.Length);
        var tables = PagedDecodeTables.Measure(cache.Allocator, sequences);
        // Planned from the staging's size and the allocator, so a refused shape throws before anything is staged or queued.
        var plan = Plan(args, cache.Store, query, output, logSumExp, 0, tables.TableStride, 0, tables.MaxLength);
        tables.Pack(cache.Allocator, sequences, cache.Store.Staging.Begin(tables.Ints, stream));
        nint device = cache.Store.Staging.Upload(tables.Ints, stream);
        Launch(tables.Bind(plan, device), cache.Store, stream);
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
    /// decode does not take, more query rows per KV head (q x H/Hkv) than one launch covers (65535 x 8), or a tensor or stream of
    /// another context. Nothing is queued.</exception>
    public static void Decode<T>(DeviceTensor<T> query, CudaKvCache<T> cache, DeviceTensor<T> output,
        AttentionOptions? options = null, DeviceTensor<float>? logSumExp = null, GpuDecodeOptions? decodeOptions = null, CudaStream? stream = null)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(cache);
        stream ??= cache.DefaultStream;
        var args = Validate(query, output, logSumExp, options, decodeOptions, stream, cache.Store, cache.Batch);
        int batch = cache.Batch;
        int maxLength = 0;
        foreach (int length in cache.Lengths) maxLength = Math.Max(maxLength, length);
        var plan = Plan(args, cache.Store, query, output, logSumExp, cache.Tables, cache.TableStride, 0, maxLength);
        cache.Lengths.CopyTo(cache.Store.Staging.Begin(batch, stream));
        nint device = cache.Store.Staging.Upload(batch, stream);
        Launch(plan.WithTables(cache.Tables, device), cache.Store, stream);
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

    /// <summary>The launch plan of a validated call (no device access; staged addresses may be filled in afterwards).</summary>
    private static DecodeLaunchPlan Plan<T>(Args a, DeviceKvStore<T> store, DeviceTensor<T> query, DeviceTensor<T> output, DeviceTensor<float>? lse,
        nint tables, int tableStride, nint lengths, int maxLength) where T : unmanaged
    {
        var device = new DecodeDevice(store.Context.Device.MultiprocessorCount, store.BlocksPerMultiprocessor,
            store.Context.Device.SharedMemoryPerBlockOptInBytes);
        var operands = new DecodeOperands(
            query.DevicePointer, new Strides3(query.Strides[0], query.Strides[1], query.Strides[2]),
            output.DevicePointer, new Strides3(output.Strides[0], output.Strides[1], output.Strides[2]),
            lse?.DevicePointer ?? 0, lse is null ? default : new Strides3(lse.Strides[0], lse.Strides[1], lse.Strides[2]),
            store.Keys.DevicePointer, store.Values.DevicePointer, tables, tableStride, lengths);
        return DecodeLaunchPlan.Create(store.Type, store.Geometry, a.Batch, a.QueryLength, a.Heads, maxLength, a.Scale, a.Mask, a.Options, device, operands);
    }

    private static void Launch<T>(DecodeLaunchPlan plan, DeviceKvStore<T> store, CudaStream stream) where T : unmanaged
    {
        nint scratch = plan.ScratchElements > 0 ? store.Scratch(plan.ScratchElements, stream).DevicePointer : 0;
        var p = plan.Parameters(scratch);
        var args = new KernelArguments();
        args.Add(p);
        store.DecodeModuleKernel(plan.KernelName, plan.Config.DynamicSharedMemoryBytes).Launch(plan.Config, stream, ref args);
        if (plan.CombineConfig is { } combineConfig)
        {
            var combine = new KernelArguments();
            combine.Add(p);
            store.DecodeModuleKernel(plan.CombineName).Launch(combineConfig, stream, ref combine);
        }
    }
}
