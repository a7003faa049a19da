// Pure host-side packing of the KV append launches: the staged ints of a paged batch append (block tables, per-entry
// token starts and positions, copy-on-write triples) and of a contiguous one, and the fa_kv_append / fa_kv_copy_pages
// parameter structs and grids. The caches launch exactly what this builds; the emulated tests build it with host addresses.
using FastAttention.Caching;
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Gpu;

/// <summary>
/// The ints a paged batch append stages, in this order: block tables <c>[B x TableStride]</c>, token starts <c>[B + 1]</c>
/// (entry b's tokens are source rows <c>[starts[b], starts[b + 1])</c>), first positions <c>[B]</c>, then
/// <see cref="Copies"/> copy-on-write triples (source page, destination page, slots).
/// </summary>
internal readonly record struct PagedAppendStaging(int Batch, int TableStride, int Tokens, int Copies)
{
    /// <summary>First int of the token starts.</summary>
    public int StartsAt => Batch * TableStride;
    /// <summary>First int of the positions.</summary>
    public int PositionsAt => StartsAt + Batch + 1;
    /// <summary>First int of the copy triples.</summary>
    public int CopiesAt => PositionsAt + Batch;
    /// <summary>Ints to stage.</summary>
    public int Ints => CopiesAt + 3 * Copies;

    /// <summary>Address of int <paramref name="index"/> when the staged ints start at <paramref name="staged"/>.</summary>
    public static nint At(nint staged, int index) => staged + (nint)index * sizeof(int);

    /// <summary>
    /// Sizes the staging of a committed batch (<paramref name="placements"/> from <see cref="BatchAppend.Commit"/> on the
    /// same <paramref name="allocator"/> and <paramref name="sequences"/>; the block tables already include the new pages).
    /// </summary>
    /// <exception cref="ArgumentException">The placements do not match the sequences, or a sequence does not exist.</exception>
    public static PagedAppendStaging Measure(PageAllocator allocator, ReadOnlySpan<int> sequences, ReadOnlySpan<AppendPlacement> placements)
    {
        if (placements.Length != sequences.Length)
        {
            throw new ArgumentException($"{placements.Length} placements for {sequences.Length} sequences.", nameof(placements));
        }
        int stride = DecodePlanner.TableStride(allocator, sequences);
        int tokens = 0, copies = 0;
        foreach (var p in placements)
        {
            tokens += p.Count;
            if (p.Copy is not null) copies++;
        }
        return new PagedAppendStaging(sequences.Length, stride, tokens, copies);
    }

    /// <summary>Writes the staged ints into <paramref name="staging"/> (<see cref="Ints"/> long).</summary>
    /// <exception cref="ArgumentException">The span is too short, or the allocator no longer matches <see cref="Measure"/>.</exception>
    public void Pack(PageAllocator allocator, ReadOnlySpan<int> sequences, ReadOnlySpan<AppendPlacement> placements, Span<int> staging)
    {
        if (staging.Length < Ints)
        {
            throw new ArgumentException($"staging has {staging.Length} ints; {Ints} are needed.", nameof(staging));
        }
        Span<int> lengths = Batch <= 256 ? stackalloc int[Batch] : new int[Batch];
        DecodePlanner.PackBlockTables(allocator, sequences, TableStride, lengths, staging[..(Batch * TableStride)]);
        int token = 0, c = 0;
        for (int b = 0; b < Batch; b++)
        {
            staging[StartsAt + b] = token;
            staging[PositionsAt + b] = placements[b].Start;
            token += placements[b].Count;
            if (placements[b].Copy is { } copy)
            {
                staging[CopiesAt + 3 * c] = copy.Source;
                staging[CopiesAt + 3 * c + 1] = copy.Destination;
                staging[CopiesAt + 3 * c + 2] = copy.Slots;
                c++;
            }
        }
        staging[StartsAt + Batch] = token;
    }
    /// <summary>The copy-on-write launch reading the triples staged at <paramref name="staged"/>, or null when no page is copied.</summary>
    public (KvCopyParams Parameters, LaunchConfig Config)? CopyLaunch(KvPoolGeometry pool, nint keyPool, nint valuePool, nint staged) =>
        Copies > 0 ? KvAppendLaunch.Copy(pool, keyPool, valuePool, At(staged, CopiesAt), Copies) : null;

    /// <summary>The append launch reading the tables, starts and positions staged at <paramref name="staged"/>, or null when no token is appended.</summary>
    public (KvAppendParams Parameters, LaunchConfig Config)? AppendLaunch(KvPoolGeometry pool, nint keyPool, nint valuePool,
        nint keySource, nint valueSource, TokenSource src, bool ragged, nint staged) =>
        Tokens > 0
            ? KvAppendLaunch.Append(pool, keyPool, valuePool, keySource, valueSource, src, ragged, Batch, Tokens,
                staged, TableStride, At(staged, StartsAt), At(staged, PositionsAt))
            : null;
}

/// <summary>
/// The ints a contiguous-cache append of <c>n</c> tokens to each of <c>count</c> sequences stages: token starts
/// <c>[count + 1]</c> (<c>i * n</c>) then first positions <c>[count]</c> (the current lengths).
/// </summary>
internal static class ContiguousAppendStaging
{
    /// <summary>Ints to stage for <paramref name="count"/> sequences.</summary>
    public static int Ints(int count) => 2 * count + 1;

    /// <summary>Index of the positions.</summary>
    public static int PositionsAt(int count) => count + 1;

    /// <summary>Writes the starts and positions; <paramref name="lengths"/> are the <paramref name="lengths"/>.Length appending sequences' current lengths.</summary>
    /// <exception cref="ArgumentException">The span is too short.</exception>
    public static void Pack(ReadOnlySpan<int> lengths, int n, Span<int> staging)
    {
        int count = lengths.Length;
        if (staging.Length < Ints(count))
        {
            throw new ArgumentException($"staging has {staging.Length} ints; {Ints(count)} are needed.", nameof(staging));
        }
        for (int i = 0; i < count; i++)
        {
            staging[i] = i * n;
            staging[count + 1 + i] = lengths[i];
        }
        staging[count] = count * n;
    }
}

/// <summary>Builds the append and copy-on-write launches (parameter struct, kernel name, grid); no device access.</summary>
internal static class KvAppendLaunch
{
    /// <summary>Threads per block of both kernels.</summary>
    public const int Threads = 128;

    /// <summary>Name of the append kernel.</summary>
    public static string AppendKernelName(KernelElementType type, int headDim) => $"fa_kv_append_hd{headDim}_{type.Suffix()}";

    /// <summary>Name of the copy-on-write page copy kernel.</summary>
    public static string CopyKernelName(KernelElementType type, int headDim) => $"fa_kv_copy_pages_hd{headDim}_{type.Suffix()}";

    /// <summary>
    /// The append of <paramref name="tokens"/> source rows of <paramref name="entries"/> batch entries: one block per token.
    /// <paramref name="tables"/>, <paramref name="tokenStarts"/> and <paramref name="positions"/> are the staged arrays' addresses.
    /// </summary>
    public static (KvAppendParams Parameters, LaunchConfig Config) Append(KvPoolGeometry pool, nint keyPool, nint valuePool,
        nint keySource, nint valueSource, TokenSource src, bool ragged, int entries, int tokens, nint tables, int tableStride, nint tokenStarts, nint positions)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokens);
        var p = new KvAppendParams
        {
            KSrc = keySource, VSrc = valueSource, KPool = keyPool, VPool = valuePool,
            BlockTables = tables, EntryTokenStart = tokenStarts, EntryPosition = positions,
            SrcEntryStride = src.EntryStride, SrcTokenStride = src.TokenStride, SrcHeadStride = src.HeadStride,
            PoolHeadStride = pool.HeadStride, PoolPageStride = pool.PageStride,
            Entries = entries, Tokens = tokens, KvHeads = pool.KvHeads, TableStride = tableStride, PageShift = pool.PageShift, Ragged = ragged ? 1 : 0,
        };
        return (p, new LaunchConfig((uint)tokens, Threads));
    }

    /// <summary>The copy of <paramref name="count"/> pages (triples at <paramref name="copies"/>): one block per (copy, KV head).</summary>
    public static (KvCopyParams Parameters, LaunchConfig Config) Copy(KvPoolGeometry pool, nint keyPool, nint valuePool, nint copies, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        var p = new KvCopyParams
        {
            KPool = keyPool, VPool = valuePool, Copies = copies,
            PoolHeadStride = pool.HeadStride, PoolPageStride = pool.PageStride, Count = count,
        };
        return (p, new LaunchConfig(new Dim3((uint)count, (uint)pool.KvHeads), Threads));
    }
}
