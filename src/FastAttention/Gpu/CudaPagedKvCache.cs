// Paged KV cache in device memory: K/V page pools [Hkv, pages, pageSize, D] (the CPU PagedKvCache's layout), page
// bookkeeping on the host by the shared PageAllocator, batched appends in one kernel launch with copy-on-write.
using FastAttention.Caching;
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Gpu;

/// <summary>
/// A paged key/value cache on the GPU (vLLM-style). Keys and values each live in a device pool laid out
/// <c>[Hkv, pageCount, pageSize, D]</c>, exactly as <c>FastAttention.Cpu.Caching.PagedKvCache</c>: token <c>p</c>
/// of a sequence is slot <c>p % PageSize</c> of page <c>BlockTable[p / PageSize]</c>. Page bookkeeping (block
/// tables, reference counts, fork with copy-on-write) is the host-side <see cref="Allocator"/>; block tables and
/// lengths are packed and uploaded for each launch. Decode it with <see cref="CudaDecode"/>.
/// Not thread-safe; calls that queue GPU work on one cache must use one stream (or be ordered by the caller).
/// </summary>
/// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
public sealed class CudaPagedKvCache<T> : IDisposable where T : unmanaged
{
    private CudaStream? _defaultStream;

    /// <summary>Creates a cache with every page free (pool contents are unspecified until written).</summary>
    /// <param name="context">The device context that owns the pools.</param>
    /// <param name="pageCount">Pages in the pool.</param>
    /// <param name="pageSize">Token slots per page: a power of two in [8, 256].</param>
    /// <param name="kvHeads">KV heads Hkv.</param>
    /// <param name="headDim">Head dimension D: 64, 128 or 256.</param>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is not supported, or <paramref name="headDim"/> has no kernel.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or <paramref name="pageSize"/> is not a power of two in [8, 256].</exception>
    /// <exception cref="CudaException">The pools could not be allocated.</exception>
    public CudaPagedKvCache(CudaContext context, int pageCount, int pageSize, int kvHeads, int headDim)
    {
        ArgumentNullException.ThrowIfNull(context);
        KernelElementTypes.Of<T>();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pageCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvHeads);
        if (pageSize < 8 || pageSize > 256 || (pageSize & (pageSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(pageSize), pageSize, $"pageSize must be a power of two in [8, 256], got {pageSize}.");
        }
        if (!KernelRegistry.DecodeHeadDims.Contains(headDim))
        {
            throw new ArgumentException($"head dim {headDim} has no GPU decode/append kernel; supported: {string.Join(", ", KernelRegistry.DecodeHeadDims)}.", nameof(headDim));
        }
        long rows = (long)kvHeads * pageCount * pageSize;
        Allocator = new PageAllocator(pageCount, pageSize);
        Store = new DeviceKvStore<T>(context, rows, pageSize, KvPoolGeometry.Paged(pageCount, pageSize, kvHeads, headDim).HeadStride, kvHeads, headDim);
    }

    /// <summary>Page bookkeeping: block tables, reference counts, free pages.</summary>
    public PageAllocator Allocator { get; }
    /// <summary>The context that owns the pools.</summary>
    public CudaContext Context => Store.Context;
    /// <summary>Token slots per page.</summary>
    public int PageSize => Allocator.PageSize;
    /// <summary>Pages in the pool.</summary>
    public int PageCount => Allocator.PageCount;
    /// <summary>KV heads (Hkv).</summary>
    public int KvHeads => Store.KvHeads;
    /// <summary>Features per head (D).</summary>
    public int HeadDim => Store.HeadDim;
    /// <summary>The key pool, <c>[Hkv, pageCount, pageSize, D]</c> flat.</summary>
    public DeviceBuffer<T> KeyPool => Store.Keys;
    /// <summary>The value pool, <c>[Hkv, pageCount, pageSize, D]</c> flat.</summary>
    public DeviceBuffer<T> ValuePool => Store.Values;

    internal DeviceKvStore<T> Store { get; }

    internal CudaStream DefaultStream => _defaultStream ??= CudaStream.Wrap(Context, 0);

    /// <summary>Creates an empty sequence and returns its id.</summary>
    public int CreateSequence() => Allocator.CreateSequence();

    /// <summary>Creates a sequence sharing every token of <paramref name="sequence"/> (no copy until one of them appends into a shared page).</summary>
    /// <exception cref="ArgumentException"><paramref name="sequence"/> does not exist.</exception>
    public int Fork(int sequence) => Allocator.Fork(sequence);

    /// <summary>Removes a sequence; its unshared pages return to the pool.</summary>
    /// <exception cref="ArgumentException"><paramref name="sequence"/> does not exist.</exception>
    public void Free(int sequence) => Allocator.Free(sequence);

    /// <summary>Tokens stored for <paramref name="sequence"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="sequence"/> does not exist.</exception>
    public int Length(int sequence) => Allocator.Length(sequence);

    /// <summary>Shortens <paramref name="sequence"/> to <paramref name="length"/> tokens; pages past the end return to the pool.</summary>
    /// <exception cref="ArgumentException"><paramref name="sequence"/> does not exist.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative or above the current length.</exception>
    public void Trim(int sequence, int length) => Allocator.Trim(sequence, length);

    /// <summary>
    /// Appends <c>n</c> tokens to each of <paramref name="sequences"/> in one launch (plus one launch for the
    /// copy-on-write page copies, queued first): token <c>i</c> of batch entry <c>b</c> becomes position
    /// <c>Length(sequences[b]) + i</c>. The pool's capacity is checked for the whole batch before anything changes.
    /// </summary>
    /// <param name="sequences">Distinct live sequence ids, <c>[B]</c>.</param>
    /// <param name="key">New keys <c>[B, n, Hkv, D]</c> (e.g. the projection output), D contiguous, other strides and the address 16-byte aligned.</param>
    /// <param name="value">New values, same shape and strides as <paramref name="key"/>.</param>
    /// <param name="stream">Stream to queue on; null = the legacy default stream.</param>
    /// <exception cref="ArgumentNullException"><paramref name="key"/> or <paramref name="value"/> is null.</exception>
    /// <exception cref="ArgumentException">A sequence does not exist or is listed twice, wrong shapes, strides or alignment,
    /// or a tensor or the stream of another context; nothing is appended.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The pool has too few free pages for the batch (message has the numbers); nothing is appended.</exception>
    public void Append(ReadOnlySpan<int> sequences, DeviceTensor<T> key, DeviceTensor<T> value, CudaStream? stream = null)
    {
        var src = TokenSource.Require(key, value, Context, [sequences.Length, -1, KvHeads, HeadDim], "[B, n, Hkv, D]");
        int n = (int)key.Lengths[1];
        Span<int> counts = sequences.Length <= 256 ? stackalloc int[sequences.Length] : new int[sequences.Length];
        counts.Fill(n);
        AppendCore(sequences, counts, key, value, src, ragged: false, stream);
    }

    /// <summary>
    /// Appends a ragged batch in one launch: <paramref name="tokenCounts"/>[b] tokens to <paramref name="sequences"/>[b],
    /// taken in order from the packed rows of <paramref name="key"/> and <paramref name="value"/>.
    /// </summary>
    /// <param name="sequences">Distinct live sequence ids, <c>[B]</c>.</param>
    /// <param name="tokenCounts">New tokens per sequence, <c>[B]</c>, each >= 0.</param>
    /// <param name="key">New keys <c>[N, Hkv, D]</c> with N = sum of the counts, D contiguous, other strides and the address 16-byte aligned.</param>
    /// <param name="value">New values, same shape and strides as <paramref name="key"/>.</param>
    /// <param name="stream">Stream to queue on; null = the legacy default stream.</param>
    /// <exception cref="ArgumentNullException"><paramref name="key"/> or <paramref name="value"/> is null.</exception>
    /// <exception cref="ArgumentException">A sequence does not exist or is listed twice, a negative count, N not the counts' sum, wrong
    /// strides or alignment, or a tensor or the stream of another context; nothing is appended.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The pool has too few free pages for the batch (message has the numbers); nothing is appended.</exception>
    public void Append(ReadOnlySpan<int> sequences, ReadOnlySpan<int> tokenCounts, DeviceTensor<T> key, DeviceTensor<T> value, CudaStream? stream = null)
    {
        long total = 0;
        foreach (int c in tokenCounts) total += Math.Max(c, 0);
        var src = TokenSource.Require(key, value, Context, [total, KvHeads, HeadDim], "[N = sum of tokenCounts, Hkv, D]");
        AppendCore(sequences, tokenCounts, key, value, src, ragged: true, stream);
    }

    private void AppendCore(ReadOnlySpan<int> sequences, ReadOnlySpan<int> counts, DeviceTensor<T> key, DeviceTensor<T> value,
        TokenSource src, bool ragged, CudaStream? stream)
    {
        stream ??= DefaultStream;
        Context.RequireSame(stream.Context, nameof(stream));
        // Validates every entry and the capacity of the whole batch, then reserves; throws with nothing changed.
        var placements = BatchAppend.Commit(Allocator, sequences, counts);
        var staging = PagedAppendStaging.Measure(Allocator, sequences, placements);
        if (staging.Tokens == 0 && staging.Copies == 0) return;
        staging.Pack(Allocator, sequences, placements, Store.Staging.Begin(staging.Ints, stream));
        nint device = Store.Staging.Upload(staging.Ints, stream);
        if (staging.CopyLaunch(Store.Geometry, Store.Keys.DevicePointer, Store.Values.DevicePointer, device) is { } copy)
        {
            Store.Launch(copy.Parameters, copy.Config, stream);
        }
        if (staging.AppendLaunch(Store.Geometry, Store.Keys.DevicePointer, Store.Values.DevicePointer, key.DevicePointer, value.DevicePointer,
            src, ragged, device) is { } append)
        {
            Store.Launch(append.Parameters, append.Config, stream);
        }
    }

    /// <summary>Frees the pools and the kernels' modules. Work queued on them must have finished.</summary>
    public void Dispose() => Store.Dispose();
}
