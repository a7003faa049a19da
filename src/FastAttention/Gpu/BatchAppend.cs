// Host-side planning of a batched KV append on a PageAllocator: validates every entry and checks the pool's capacity
// for the whole batch (exactly, copy-on-write included) before reserving anything, so a failing batch changes nothing.
using FastAttention.Caching;

namespace FastAttention.Gpu;

/// <summary>
/// All-or-nothing appends of several sequences at once. <see cref="PageAllocator.Append"/> is atomic per sequence;
/// a batch of them is made atomic by computing the pages the whole batch takes first (<see cref="PagesNeeded"/>)
/// and only then reserving them one sequence after another, which cannot fail any more.
/// </summary>
public static class BatchAppend
{
    /// <summary>
    /// Pages the batch takes from the pool: new pages for each sequence's growth, plus one copy-on-write page per
    /// sequence whose partially filled last page is still shared when its turn comes. Appends in batch order release
    /// the shared page one reference at a time, so of k appenders sharing a page with reference count c,
    /// <c>min(k, c - 1)</c> copy and the last one (when every holder appends) writes in place.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null.</exception>
    /// <exception cref="ArgumentException">The spans differ in length, a sequence does not exist or is listed twice, a count is negative,
    /// or a length would pass int.MaxValue.</exception>
    public static long PagesNeeded(PageAllocator allocator, ReadOnlySpan<int> sequences, ReadOnlySpan<int> counts)
    {
        Validate(allocator, sequences, counts);
        long pages = 0;
        Dictionary<int, int>? appendersOfSharedPage = null;
        for (int b = 0; b < sequences.Length; b++)
        {
            if (counts[b] == 0) continue;
            int length = allocator.Length(sequences[b]);
            var table = allocator.BlockTable(sequences[b]);
            pages += ((long)length + counts[b] + allocator.PageSize - 1) / allocator.PageSize - table.Length;
            if (length % allocator.PageSize != 0 && allocator.RefCount(table[^1]) > 1)
            {
                appendersOfSharedPage ??= [];
                appendersOfSharedPage[table[^1]] = appendersOfSharedPage.GetValueOrDefault(table[^1]) + 1;
            }
        }
        if (appendersOfSharedPage is not null)
        {
            foreach (var (page, appenders) in appendersOfSharedPage) pages += Math.Min(appenders, allocator.RefCount(page) - 1);
        }
        return pages;
    }

    /// <summary>
    /// Appends <paramref name="counts"/>[b] tokens to <paramref name="sequences"/>[b] for every b, or throws and changes
    /// nothing. Returns each entry's placement (start position, count, copy-on-write copy to perform before writing).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null.</exception>
    /// <exception cref="ArgumentException">As <see cref="PagesNeeded"/>; nothing was appended.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The pool has too few free pages for the whole batch (the message has the numbers); nothing was appended.</exception>
    public static AppendPlacement[] Commit(PageAllocator allocator, ReadOnlySpan<int> sequences, ReadOnlySpan<int> counts)
    {
        long needed = PagesNeeded(allocator, sequences, counts);
        if (needed > allocator.FreePages)
        {
            long tokens = 0;
            foreach (int c in counts) tokens += c;
            throw new ArgumentOutOfRangeException(nameof(counts), tokens,
                $"Appending {tokens} tokens to {sequences.Length} sequences needs {needed} free pages of {allocator.PageSize} slots; " +
                $"the pool has {allocator.FreePages} of {allocator.PageCount}. Nothing was appended.");
        }
        var placements = new AppendPlacement[sequences.Length];
        for (int b = 0; b < sequences.Length; b++) placements[b] = allocator.Append(sequences[b], counts[b]);
        return placements;
    }

    private static void Validate(PageAllocator allocator, ReadOnlySpan<int> sequences, ReadOnlySpan<int> counts)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        if (counts.Length != sequences.Length)
        {
            throw new ArgumentException($"counts has {counts.Length} entries but sequences has {sequences.Length}.", nameof(counts));
        }
        var seen = new HashSet<int>();
        for (int b = 0; b < sequences.Length; b++)
        {
            DecodePlanner.RequireLive(allocator, sequences, b);
            if (!seen.Add(sequences[b]))
            {
                throw new ArgumentException($"sequences[{b}] = {sequences[b]} is listed twice; a batch appends to each sequence once.", nameof(sequences));
            }
            if (counts[b] < 0)
            {
                throw new ArgumentException($"counts[{b}] = {counts[b]} is negative.", nameof(counts));
            }
            if ((long)allocator.Length(sequences[b]) + counts[b] > int.MaxValue)
            {
                throw new ArgumentException($"Appending {counts[b]} tokens to sequence {sequences[b]} (length {allocator.Length(sequences[b])}) would pass {int.MaxValue} tokens.", nameof(counts));
            }
        }
    }
}
