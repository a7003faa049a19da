// Paged KV cache (vLLM-style) on the CPU: a page pool, per-sequence block tables, copy-on-write fork.
using System.Numerics.Tensors;
using FastAttention.Caching;

namespace FastAttention.Cpu.Caching;

/// <summary>
/// A paged key/value cache. Pages hold <see cref="PageSize"/> tokens; keys and values each live in a
/// pool laid out <c>[Hkv, pageCount, pageSize, D]</c> (head-major: each KV head's slots of a page are
/// contiguous, and so are a head's consecutive pages, so decode streams them; 16-token pages laid out
/// page-major measured ~27% slower than contiguous), and token <c>p</c> of a sequence is slot
/// <c>p % PageSize</c> of page <c>BlockTable[p / PageSize]</c>. The GPU cache uses the same layout. Page bookkeeping (allocation,
/// reference counts, fork with copy-on-write) is <see cref="Allocator"/>.
/// </summary>
/// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
public sealed class PagedKvCache<T> where T : unmanaged
{
    private readonly T[] _keys, _values;

    /// <summary>Creates a cache with every page free.</summary>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is not supported.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or the pool would exceed 2^31 elements.</exception>
    public PagedKvCache(int pageCount, int pageSize, int kvHeads, int headDim)
    {
        ElementTypes.Require<T>(nameof(T));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvHeads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        Allocator = new PageAllocator(pageCount, pageSize);
        long elements = (long)pageCount * pageSize * kvHeads * headDim;
        if (elements > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(pageCount), pageCount,
                $"{pageCount} x {pageSize} x {kvHeads} x {headDim} = {elements} elements exceed {Array.MaxLength}.");
        }
        (KvHeads, HeadDim) = (kvHeads, headDim);
        _keys = CachePool.Allocate<T>((int)elements);
        _values = CachePool.Allocate<T>((int)elements);
    }

    /// <summary>Page bookkeeping: block tables, reference counts, free pages.</summary>
    public PageAllocator Allocator { get; }
    /// <summary>Token slots per page.</summary>
    public int PageSize => Allocator.PageSize;
    /// <summary>Key/value heads (Hkv).</summary>
    public int KvHeads { get; }
    /// <summary>Features per head (D).</summary>
    public int HeadDim { get; }

    /// <summary>Raw key pool <c>[Hkv, pageCount, pageSize, D]</c> (tests poison unused slots through it).</summary>
    internal Span<T> KeyStorage => _keys;
    /// <summary>Raw value pool.</summary>
    internal Span<T> ValueStorage => _values;

    /// <summary>Creates an empty sequence.</summary>
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

    /// <summary>Appends tokens to a sequence, copying a shared last page first (copy-on-write).</summary>
    /// <param name="sequence">A live sequence id.</param>
    /// <param name="key">New keys, <c>[n, Hkv, D]</c>, any strides.</param>
    /// <param name="value">New values, <c>[n, Hkv, D]</c>, any strides.</param>
    /// <exception cref="ArgumentException">The sequence does not exist, or wrong shapes; nothing is written.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The pool has too few free pages (message has the numbers); nothing is written.</exception>
    public void Append(int sequence, ReadOnlyTensorSpan<T> key, ReadOnlyTensorSpan<T> value)
    {
        Allocator.Length(sequence);
        CacheInputs.RequireTokens(key, value, [-1, KvHeads, HeadDim], "[n, Hkv, D]");
        var placement = Allocator.Append(sequence, (int)key.Lengths[0]);
        int pageStride = PageSize * HeadDim, headStride = Allocator.PageCount * pageStride;
        if (placement.Copy is { } copy)
        {
            for (int h = 0; h < KvHeads; h++)
            {
                int from = copy.Source * pageStride + h * headStride, to = copy.Destination * pageStride + h * headStride;
                int count = copy.Slots * HeadDim;
                _keys.AsSpan(from, count).CopyTo(_keys.AsSpan(to, count));
                _values.AsSpan(from, count).CopyTo(_values.AsSpan(to, count));
            }
        }
        var table = Allocator.BlockTable(sequence);
        for (int t = 0; t < placement.Count; t++)
        {
            int position = placement.Start + t;
            int offset = table[position / PageSize] * pageStride + position % PageSize * HeadDim;
            CacheInputs.CopyToken(key, [t], _keys, offset, headStride);
            CacheInputs.CopyToken(value, [t], _values, offset, headStride);
        }
    }
}
