// Host-side page allocator of a paged KV cache: block tables, reference counts, copy-on-write fork.

namespace FastAttention.Caching;

/// <summary>A copy of the first <see cref="Slots"/> token slots of page <see cref="Source"/> into page <see cref="Destination"/> (copy-on-write).</summary>
/// <param name="Source">Shared page being replaced.</param>
/// <param name="Destination">Freshly allocated page.</param>
/// <param name="Slots">Token slots already filled in the source page.</param>
public readonly record struct PageCopy(int Source, int Destination, int Slots);

/// <summary>Where an append lands: tokens go to positions <c>[Start, Start + Count)</c> of the sequence.</summary>
/// <param name="Start">Position of the first new token (the sequence length before the append).</param>
/// <param name="Count">Number of tokens appended.</param>
/// <param name="Copy">The copy-on-write copy to perform before writing, if any.</param>
public readonly record struct AppendPlacement(int Start, int Count, PageCopy? Copy);

/// <summary>
/// Bookkeeping of a paged KV cache, independent of where the pages live (CPU or GPU memory): a pool
/// of <see cref="PageCount"/> pages of <see cref="PageSize"/> token slots, one block table per
/// sequence (position <c>p</c> lives in page <c>BlockTable[p / PageSize]</c>, slot <c>p % PageSize</c>),
/// reference counts so <see cref="Fork"/> shares a prefix, and copy-on-write when a sequence appends
/// into a partially filled page it shares. Every operation validates first and changes nothing when
/// it throws. Not thread-safe: one writer at a time.
/// </summary>
public sealed class PageAllocator
{
    private readonly int[] _refCounts;
    private readonly Stack<int> _free;
    private readonly Dictionary<int, Sequence> _sequences = [];
    private int _nextId;

    private sealed class Sequence
    {
        public List<int> Pages = [];
        public int Length;
    }

    /// <summary>Creates an allocator with every page free.</summary>
    /// <param name="pageCount">Pages in the pool.</param>
    /// <param name="pageSize">Token slots per page.</param>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive.</exception>
    public PageAllocator(int pageCount, int pageSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pageCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pageSize);
        PageCount = pageCount;
        PageSize = pageSize;
        _refCounts = new int[pageCount];
        _free = new Stack<int>(Enumerable.Range(0, pageCount).Reverse());
    }

    /// <summary>Pages in the pool.</summary>
    public int PageCount { get; }
    /// <summary>Token slots per page.</summary>
    public int PageSize { get; }
    /// <summary>Pages not referenced by any sequence.</summary>
    public int FreePages => _free.Count;
    /// <summary>Live sequence ids.</summary>
    public IReadOnlyCollection<int> Sequences => _sequences.Keys;

    /// <summary>Creates an empty sequence and returns its id.</summary>
    public int CreateSequence()
    {
        int id = _nextId++;
        _sequences[id] = new Sequence();
        return id;
    }

    /// <summary>
    /// Creates a sequence that shares every page of <paramref name="sequence"/> (same length, same
    /// tokens); the first append into a shared, partially filled page copies it.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="sequence"/> does not exist.</exception>
    public int Fork(int sequence)
    {
        var source = Get(sequence, nameof(sequence));
        int id = _nextId++;
        _sequences[id] = new Sequence { Pages = [.. source.Pages], Length = source.Length };
        foreach (int page in source.Pages) _refCounts[page]++;
        return id;
    }

    /// <summary>Removes a sequence; pages it alone referenced return to the pool.</summary>
    /// <exception cref="ArgumentException"><paramref name="sequence"/> does not exist.</exception>
    public void Free(int sequence)
    {
        var seq = Get(sequence, nameof(sequence));
        _sequences.Remove(sequence);
        foreach (int page in seq.Pages) Release(page);
    }

    /// <summary>Tokens stored for <paramref name="sequence"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="sequence"/> does not exist.</exception>
    public int Length(int sequence) => Get(sequence, nameof(sequence)).Length;

    /// <summary>The pages of <paramref name="sequence"/> in position order (valid until the next change).</summary>
    /// <exception cref="ArgumentException"><paramref name="sequence"/> does not exist.</exception>
    public ReadOnlySpan<int> BlockTable(int sequence) =>
        System.Runtime.InteropServices.CollectionsMarshal.AsSpan(Get(sequence, nameof(sequence)).Pages);

    /// <summary>How many block tables reference <paramref name="page"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="page"/> is outside the pool.</exception>
    public int RefCount(int page)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(page);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(page, PageCount);
        return _refCounts[page];
    }

    /// <summary>Pages an append of <paramref name="tokens"/> tokens to <paramref name="sequence"/> would take from the pool.</summary>
    /// <exception cref="ArgumentException"><paramref name="sequence"/> does not exist.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="tokens"/> is negative.</exception>
    public int PagesNeeded(int sequence, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        var seq = Get(sequence, nameof(sequence));
        return PagesNeeded(seq, tokens);
    }

    /// <summary>
    /// Reserves room for <paramref name="tokens"/> more tokens: allocates the pages, replaces a shared
    /// partially filled last page by a private copy (returned for the caller to perform before writing)
    /// and advances the length. Throws before changing anything when the pool is too small.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="sequence"/> does not exist.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="tokens"/> is negative, or the pool lacks free pages (message has the numbers).</exception>
    public AppendPlacement Append(int sequence, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        var seq = Get(sequence, nameof(sequence));
        if ((long)seq.Length + tokens > int.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens,
                $"Appending {tokens} tokens to sequence {sequence} (length {seq.Length}) would pass {int.MaxValue} tokens. Nothing was appended.");
        }
        int needed = PagesNeeded(seq, tokens);
        if (needed > _free.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens,
                $"Appending {tokens} tokens to sequence {sequence} (length {seq.Length}) needs {needed} free pages of {PageSize} slots; " +
                $"the pool has {_free.Count} of {PageCount}. Nothing was appended.");
        }
        PageCopy? copy = null;
        int filled = seq.Length % PageSize;
        if (tokens > 0 && filled != 0 && _refCounts[seq.Pages[^1]] > 1)
        {
            int shared = seq.Pages[^1];
            int fresh = Take();
            _refCounts[shared]--;
            seq.Pages[^1] = fresh;
            copy = new PageCopy(shared, fresh, filled);
        }
        int start = seq.Length;
        int pagesAfter = (int)PagesFor(start + tokens);
        while (seq.Pages.Count < pagesAfter) seq.Pages.Add(Take());
        seq.Length = start + tokens;
        return new AppendPlacement(start, tokens, copy);
    }

    /// <summary>Shortens <paramref name="sequence"/> to <paramref name="length"/> tokens; pages past the end are released.</summary>
    /// <exception cref="ArgumentException"><paramref name="sequence"/> does not exist.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative or above the current length.</exception>
    public void Trim(int sequence, int length)
    {
        var seq = Get(sequence, nameof(sequence));
        if ((uint)length > (uint)seq.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"length must be in [0, {seq.Length}] for sequence {sequence}.");
        }
        int keep = (int)PagesFor(length);
        for (int i = seq.Pages.Count - 1; i >= keep; i--)
        {
            Release(seq.Pages[i]);
            seq.Pages.RemoveAt(i);
        }
        seq.Length = length;
    }

    private int PagesNeeded(Sequence seq, int tokens)
    {
        if (tokens == 0) return 0;
        int filled = seq.Length % PageSize;
        int cow = filled != 0 && _refCounts[seq.Pages[^1]] > 1 ? 1 : 0;
        return (int)Math.Min(int.MaxValue, PagesFor((long)seq.Length + tokens) - seq.Pages.Count + cow);
    }

    /// <summary>Pages holding <paramref name="tokens"/> tokens (computed in 64 bits: lengths reach int.MaxValue).</summary>
    private long PagesFor(long tokens) => (tokens + PageSize - 1) / PageSize;

    private int Take()
    {
        int page = _free.Pop();
        _refCounts[page] = 1;
        return page;
    }

    private void Release(int page)
    {
        if (--_refCounts[page] == 0) _free.Push(page);
    }

    private Sequence Get(int sequence, string paramName) =>
        _sequences.TryGetValue(sequence, out var seq)
            ? seq
            : throw new ArgumentException($"Sequence {sequence} does not exist (live sequences: {_sequences.Count}).", paramName);
}
