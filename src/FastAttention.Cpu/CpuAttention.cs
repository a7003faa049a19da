// Public entry points of the CPU engine: flash-style attention forward and the fused row softmax.
using System.Numerics.Tensors;
using FastAttention.Cpu.Caching;
using FastAttention.Cpu.Engine;

namespace FastAttention.Cpu;

/// <summary>
/// Scaled dot-product attention on the CPU: tiled, online softmax (no Sq x Sk score matrix unless
/// probabilities are requested), SIMD (AVX-512 where the processor has it, else AVX2/FMA), fp32
/// accumulation, multithreaded over (batch, head, query tile).
/// </summary>
/// <remarks>
/// Semantics follow FlashAttention-2: scale defaults to <c>1/sqrt(D)</c>; causal masking with
/// Sq != Sk is bottom-right aligned; GQA/MQA query head <c>h</c> reads KV head <c>h / (H / Hkv)</c>;
/// a query row that sees no key outputs zeros and a log-sum-exp of negative infinity, never NaN.
/// See <see cref="AttentionMask"/> for the exact visibility rule.
/// </remarks>
public static class CpuAttention
{
    /// <summary>Largest head dimension the CPU engine accepts.</summary>
    public const int MaxHeadDim = 512;

    /// <summary>
    /// Attention forward: <c>output = softmax(scale · Q·Kᵀ + mask) · V</c>, per batch entry and head.
    /// </summary>
    /// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/>; accumulation is fp32.</typeparam>
    /// <param name="query">Q, <c>[B, Sq, H, D]</c>, any strides (a <c>[B, H, S, D]</c> view works as is).</param>
    /// <param name="key">K, <c>[B, Sk, Hkv, D]</c>, any strides.</param>
    /// <param name="value">V, <c>[B, Sk, Hkv, D]</c>, any strides.</param>
    /// <param name="output">O, <c>[B, Sq, H, D]</c>; must not overlap the inputs.</param>
    /// <param name="options">Scale, mask and parallelism; null = <see cref="AttentionOptions.Default"/>.</param>
    /// <param name="logSumExp">Optional fp32 <c>[B, H, Sq]</c>: natural-log sum of exp of the scaled, masked scores per row (-inf for rows that see no key). Pass <c>default</c> to skip.</param>
    /// <param name="probabilities">Optional fp32 <c>[B, H, Sq, Sk]</c>: the attention weights (0 where masked). Pass <c>default</c> to skip; requesting them costs a second pass over Q·Kᵀ.</param>
    /// <exception cref="ArgumentException">
    /// <typeparamref name="T"/> is not supported; a tensor has the wrong rank, a zero-size dimension or
    /// sizes that do not agree; H is not a multiple of Hkv; D exceeds <see cref="MaxHeadDim"/>; a destination
    /// has the wrong lengths or overlapping strides; the mask does not fit the shape. Nothing is written.
    /// </exception>
    public static void Forward<T>(
        ReadOnlyTensorSpan<T> query,
        ReadOnlyTensorSpan<T> key,
        ReadOnlyTensorSpan<T> value,
        TensorSpan<T> output,
        AttentionOptions? options = null,
        TensorSpan<float> logSumExp = default,
        TensorSpan<float> probabilities = default)
        where T : unmanaged
    {
        options ??= AttentionOptions.Default;
        ElementTypes.Require<T>(nameof(query));
        var shape = AttentionShape.FromTensors(query, key, value);
        if (shape.HeadDim > MaxHeadDim)
        {
            throw new ArgumentException(
                $"query head dim {shape.HeadDim} exceeds the CPU engine's maximum of {MaxHeadDim}.", nameof(query));
        }
        AttentionShape.RequireDestination(output, [shape.Batch, shape.QueryLength, shape.Heads, shape.HeadDim], nameof(output), "[B, Sq, H, D]");
        bool wantLse = !IsOmitted(logSumExp);
        bool wantProbs = !IsOmitted(probabilities);
        if (wantLse)
        {
            AttentionShape.RequireDestination(logSumExp, [shape.Batch, shape.Heads, shape.QueryLength], nameof(logSumExp), "[B, H, Sq]");
        }
        if (wantProbs)
        {
            AttentionShape.RequireDestination(probabilities, [shape.Batch, shape.Heads, shape.QueryLength, shape.KeyLength], nameof(probabilities), "[B, H, Sq, Sk]");
        }
        shape.RequireMaskFits(options.Mask, nameof(options));

        var args = new FlashArgs(shape, options.ResolveScale(shape.HeadDim), options.Mask, options.ResolveParallelism(), options.Width);
        FlashEngine.Run(args, query, key, value, output, logSumExp, wantLse, probabilities, wantProbs);
    }

    /// <summary>
    /// Fused softmax over the last axis of materialised scores:
    /// <c>output = softmax(scale · scores, masked)</c>, max-subtracted, fp32 inside.
    /// Masked positions get 0; a row with no visible key is all zeros.
    /// </summary>
    /// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
    /// <param name="scores">Raw scores, <c>[B, H, Sq, Sk]</c>, any strides.</param>
    /// <param name="output">Probabilities, <c>[B, H, Sq, Sk]</c>; may be the same memory as <paramref name="scores"/> (same strides).</param>
    /// <param name="scale">Multiplier applied to each score before the softmax.</param>
    /// <param name="mask">Visibility rules as in attention (H is the size of axis 1); null = none.</param>
    /// <param name="maxDegreeOfParallelism">Worker threads; -1 = all processors.</param>
    /// <exception cref="ArgumentException">Unsupported <typeparamref name="T"/>, wrong rank or lengths, zero-size dimension, a mask that does not fit, a non-finite scale, or an invalid parallelism. Nothing is written.</exception>
    public static void Softmax<T>(
        ReadOnlyTensorSpan<T> scores,
        TensorSpan<T> output,
        float scale = 1f,
        AttentionMask? mask = null,
        int maxDegreeOfParallelism = -1)
        where T : unmanaged
    {
        mask ??= AttentionMask.None;
        ElementTypes.Require<T>(nameof(scores));
        if (scores.Rank != 4)
        {
            throw new ArgumentException($"scores must be rank 4 [B, H, Sq, Sk], got rank {scores.Rank}.", nameof(scores));
        }
        for (int i = 0; i < 4; i++)
        {
            if (scores.Lengths[i] <= 0 || scores.Lengths[i] > int.MaxValue)
            {
                throw new ArgumentException($"scores dimension {i} has size {scores.Lengths[i]}; every dimension must be in [1, {int.MaxValue}].", nameof(scores));
            }
        }
        if (!float.IsFinite(scale))
        {
            throw new ArgumentOutOfRangeException(nameof(scale), scale, $"scale must be finite, got {scale}.");
        }
        if (maxDegreeOfParallelism == 0 || maxDegreeOfParallelism < -1)
        {
            throw new ArgumentOutOfRangeException(nameof(maxDegreeOfParallelism), maxDegreeOfParallelism,
                $"{nameof(maxDegreeOfParallelism)} must be -1 (all processors) or >= 1, got {maxDegreeOfParallelism}.");
        }
        var options = new AttentionOptions { MaxDegreeOfParallelism = maxDegreeOfParallelism };
        var l = scores.Lengths;
        var shape = new AttentionShape((int)l[0], (int)l[2], (int)l[3], (int)l[1], (int)l[1], 1);
        AttentionShape.RequireDestination(output, l, nameof(output), "[B, H, Sq, Sk]");
        shape.RequireMaskFits(mask, nameof(mask));
        FusedSoftmax.Run(shape, scale, mask, options.ResolveParallelism(), scores, output);
    }

    /// <summary>
    /// Decode attention over a contiguous cache: the <c>q</c> query rows of each sequence are its last
    /// <c>q</c> positions (bottom-right aligned: row <c>i</c> is position <c>length - q + i</c>), attending
    /// to the cached tokens. Split over the key axis (flash-decoding), so one sequence uses every core.
    /// Append the new tokens' keys and values to the cache first.
    /// </summary>
    /// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
    /// <param name="query">Q, <c>[B, q, H, D]</c>, any strides.</param>
    /// <param name="cache">Cached keys and values; <c>B</c> must equal <see cref="KvCache{T}.Batch"/>.</param>
    /// <param name="output">O, <c>[B, q, H, D]</c>.</param>
    /// <param name="options">Scale, causal flag and sliding window; lengths come from the cache, so
    /// <see cref="AttentionMask.KeyLengths"/>, <see cref="AttentionMask.QueryLengths"/> and
    /// <see cref="AttentionMask.BlockMask"/> must be null.</param>
    /// <param name="logSumExp">Optional fp32 <c>[B, H, q]</c>.</param>
    /// <exception cref="ArgumentException">Shapes that do not match the cache or each other, unsupported
    /// <typeparamref name="T"/>, a mask field decode does not take, or a wrong destination. Nothing is written.</exception>
    public static void Decode<T>(
        ReadOnlyTensorSpan<T> query,
        KvCache<T> cache,
        TensorSpan<T> output,
        AttentionOptions? options = null,
        TensorSpan<float> logSumExp = default)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(cache);
        options ??= AttentionOptions.Default;
        var args = DecodeArguments(query, output, logSumExp, options, cache.Batch, cache.KvHeads, cache.HeadDim);
        var lengths = cache.Lengths.ToArray();
        var runs = new KeyRun[cache.Batch];
        var runStart = new int[cache.Batch + 1];
        for (int b = 0; b < cache.Batch; b++)
        {
            runs[b] = new KeyRun(0, lengths[b], cache.Rows(b, 0).Offset);
            runStart[b + 1] = b + 1;
        }
        RunDecode(args, query, output, logSumExp, cache.KeyStorage, cache.ValueStorage, cache.Rows(0, 0).HeadStride, runs, runStart, lengths);
    }

    /// <summary>
    /// Decode attention over a paged cache for the sequences listed in <paramref name="sequences"/>
    /// (batch entry <c>b</c> reads sequence <c>sequences[b]</c>); otherwise as
    /// <see cref="Decode{T}(ReadOnlyTensorSpan{T}, KvCache{T}, TensorSpan{T}, AttentionOptions?, TensorSpan{float})"/>.
    /// </summary>
    /// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
    /// <param name="query">Q, <c>[B, q, H, D]</c>, any strides.</param>
    /// <param name="cache">The paged cache.</param>
    /// <param name="sequences">Live sequence ids, <c>[B]</c>.</param>
    /// <param name="output">O, <c>[B, q, H, D]</c>.</param>
    /// <param name="options">Scale, causal flag and sliding window (no lengths, no block mask).</param>
    /// <param name="logSumExp">Optional fp32 <c>[B, H, q]</c>.</param>
    /// <exception cref="ArgumentException">A sequence id that does not exist, shapes that do not match,
    /// unsupported <typeparamref name="T"/>, a mask field decode does not take, or a wrong destination. Nothing is written.</exception>
    public static void Decode<T>(
        ReadOnlyTensorSpan<T> query,
        PagedKvCache<T> cache,
        ReadOnlySpan<int> sequences,
        TensorSpan<T> output,
        AttentionOptions? options = null,
        TensorSpan<float> logSumExp = default)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(cache);
        options ??= AttentionOptions.Default;
        var args = DecodeArguments(query, output, logSumExp, options, sequences.Length, cache.KvHeads, cache.HeadDim);
        var lengths = new int[sequences.Length];
        var runStart = new int[sequences.Length + 1];
        var runs = new List<KeyRun>();
        int page = cache.PageSize, pageStride = page * cache.HeadDim, headStride = cache.Allocator.PageCount * pageStride;
        for (int b = 0; b < sequences.Length; b++)
        {
            if (!cache.Allocator.Sequences.Contains(sequences[b]))
            {
                throw new ArgumentException($"sequences[{b}] = {sequences[b]} is not a live sequence of the cache.", nameof(sequences));
            }
            lengths[b] = cache.Length(sequences[b]);
            var table = cache.Allocator.BlockTable(sequences[b]);
            for (int p = 0; p * page < lengths[b]; p++)
            {
                runs.Add(new KeyRun(p * page, Math.Min(page, lengths[b] - p * page), (nint)table[p] * pageStride));
            }
            runStart[b + 1] = runs.Count;
        }
        RunDecode(args, query, output, logSumExp, cache.KeyStorage, cache.ValueStorage, headStride, [.. runs], runStart, lengths);
    }

    private static DecodeArgs DecodeArguments<T>(ReadOnlyTensorSpan<T> query, TensorSpan<T> output, TensorSpan<float> logSumExp,
        AttentionOptions options, int batch, int kvHeads, int headDim)
    {
        ElementTypes.Require<T>(nameof(query));
        if (query.Rank != 4)
        {
            throw new ArgumentException($"query must be rank 4 [B, q, H, D], got rank {query.Rank}.", nameof(query));
        }
        var l = query.Lengths;
        if (l[0] < 1)
        {
            throw new ArgumentException($"query dimension 0 (batch) has size {l[0]}; decode needs at least one sequence.", nameof(query));
        }
        if (l[0] != batch || l[1] < 1 || l[3] != headDim || l[2] < 1 || l[2] % kvHeads != 0)
        {
            throw new ArgumentException(
                $"query [{AttentionShape.Join(l)}] must be [B = {batch}, q >= 1, H (a multiple of Hkv = {kvHeads}), D = {headDim}].", nameof(query));
        }
        if (headDim > MaxHeadDim)
        {
            throw new ArgumentException($"head dim {headDim} exceeds the CPU engine's maximum of {MaxHeadDim}.", nameof(query));
        }
        var mask = options.Mask;
        if (mask.KeyLengths is not null || mask.QueryLengths is not null || mask.BlockMask is not null)
        {
            throw new ArgumentException(
                "Decode takes lengths from the cache and has no block-sparse layout: Mask.KeyLengths, Mask.QueryLengths and Mask.BlockMask must be null.", nameof(options));
        }
        AttentionShape.RequireDestination(output, l, nameof(output), "[B, q, H, D]");
        if (!IsOmitted(logSumExp))
        {
            AttentionShape.RequireDestination(logSumExp, [l[0], l[2], l[1]], nameof(logSumExp), "[B, H, q]");
        }
        return new DecodeArgs((int)l[0], (int)l[1], (int)l[2], kvHeads, headDim, options.ResolveScale(headDim), mask, options.ResolveParallelism(), options.Width);
    }

    private static unsafe void RunDecode<T>(DecodeArgs args, ReadOnlyTensorSpan<T> query, TensorSpan<T> output, TensorSpan<float> logSumExp,
        Span<T> keys, Span<T> values, int headStride, KeyRun[] runs, int[] runStart, int[] lengths)
        where T : unmanaged
    {
        fixed (T* qp = &Elements.First(query), op = &Elements.First(output), kp = keys, vp = values)
        fixed (float* lp = &Elements.First(logSumExp))
        {
            var source = new CacheSource<T> { Keys = kp, Values = vp, HeadStride = headStride, Runs = runs, RunStart = runStart, Lengths = lengths };
            DecodeEngine.Run(args, View<T>.Of(qp, query.Strides), View<T>.Of(op, output.Strides),
                IsOmitted(logSumExp) ? default : View<float>.Of(lp, logSumExp.Strides), source);
        }
    }

    private static bool IsOmitted<TElem>(TensorSpan<TElem> t) => t.Rank == 0;
}
