// Host-side planning of a GPU decode launch: split-KV count (flash-decoding), page-aligned split sizes, row chunks,
// resident blocks per SM, and the packing of block tables and lengths for a batch. Pure functions, unit-tested on CPU.
using FastAttention.Caching;

namespace FastAttention.Gpu;

/// <summary>How a decode launch divides its work.</summary>
/// <param name="Splits">Key-axis partitions per (KV head, batch entry, row chunk); 1 = no combine pass.</param>
/// <param name="KeysPerSplit">Keys per partition, a multiple of the page size; split s covers <c>[s * KeysPerSplit, (s + 1) * KeysPerSplit)</c>.</param>
/// <param name="RowChunks">Blocks of up to <see cref="DecodePlanner.RowsPerBlock"/> query rows (q_len x heads per KV head) per KV head.</param>
public readonly record struct DecodePlan(int Splits, int KeysPerSplit, int RowChunks);

/// <summary>
/// Chooses the split-KV decode layout (DESIGN.md section 7): splits = 1 when the blocks without splitting
/// (batch x KV heads x row chunks) already fill two waves of SMs; otherwise the smallest split count whose wave
/// efficiency (waves / ceil(waves), a wave being every SM's resident blocks) is within 85% of the best count's,
/// at most <see cref="MaxSplits"/>, with at least <see cref="MinKeysPerSplit"/> keys (rounded up to whole pages) per split.
/// </summary>
public static class DecodePlanner
{
    /// <summary>Query rows one block of the tuned decode kernel holds (rows of one KV head: q_len x H/Hkv).</summary>
    public const int RowsPerBlock = 8;

    /// <summary>Most key partitions.</summary>
    public const int MaxSplits = 128;

    /// <summary>Fewest keys worth a partition of their own (before rounding up to whole pages).</summary>
    public const int MinKeysPerSplit = 256;

    /// <summary>Largest grid dimension y and z a launch may use.</summary>
    internal const int MaxGridYz = 65535;

    /// <summary>Plans one decode launch.</summary>
    /// <param name="batch">Batch entries B.</param>
    /// <param name="kvHeads">KV heads Hkv.</param>
    /// <param name="rowsPerKvHead">Query rows sharing one KV head: q_len x (H / Hkv).</param>
    /// <param name="maxLength">Longest cached length in the batch.</param>
    /// <param name="pageSize">Page size (a power of two); split sizes are multiples of it.</param>
    /// <param name="multiprocessors">SMs of the device.</param>
    /// <param name="blocksPerMultiprocessor">Decode blocks resident per SM (see <see cref="BlocksPerMultiprocessor"/>).</param>
    /// <param name="splits">A split count to use instead of the heuristic (clamped to what the context allows), or null.</param>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive, <paramref name="maxLength"/> is negative,
    /// <paramref name="pageSize"/> is not a power of two, or the row chunks exceed the grid limit.</exception>
    public static DecodePlan Plan(int batch, int kvHeads, int rowsPerKvHead, int maxLength, int pageSize,
        int multiprocessors, int blocksPerMultiprocessor, int? splits = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batch);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvHeads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rowsPerKvHead);
        ArgumentOutOfRangeException.ThrowIfNegative(maxLength);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(multiprocessors);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blocksPerMultiprocessor);
        if (pageSize <= 0 || (pageSize & (pageSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(pageSize), pageSize, $"pageSize must be a positive power of two, got {pageSize}.");
        }
        if (splits is { } forced) ArgumentOutOfRangeException.ThrowIfNegativeOrZero(forced, nameof(splits));
        int rowChunks = (rowsPerKvHead + RowsPerBlock - 1) / RowsPerBlock;
        if (rowChunks > MaxGridYz)
        {
            throw new ArgumentOutOfRangeException(nameof(rowsPerKvHead), rowsPerKvHead,
                $"{rowsPerKvHead} query rows per KV head need {rowChunks} row blocks; at most {MaxGridYz} fit a launch.");
        }
        // Splits never exceed what the grid's z dimension holds next to the row chunks.
        int limit = Math.Min(MaxSplits, MaxGridYz / rowChunks);
        int wanted = splits is { } f ? Math.Min(f, limit) : ChooseSplits(batch, kvHeads, rowChunks, maxLength, pageSize,
            multiprocessors, blocksPerMultiprocessor, limit);
        return Layout(wanted, maxLength, pageSize, rowChunks);
    }

    /// <summary>
    /// Blocks of <paramref name="threads"/> threads resident per SM, limited by registers (allocated per warp in units of
    /// 256), shared memory (plus the 1 KiB the driver reserves per block) and threads.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive (shared memory may be 0).</exception>
    public static int BlocksPerMultiprocessor(int registersPerThread, int sharedBytesPerBlock, int threads,
        int registersPerMultiprocessor, int sharedBytesPerMultiprocessor, int maxThreadsPerMultiprocessor)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(registersPerThread);
        ArgumentOutOfRangeException.ThrowIfNegative(sharedBytesPerBlock);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(threads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(registersPerMultiprocessor);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(sharedBytesPerMultiprocessor);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxThreadsPerMultiprocessor);
        int warps = (threads + 31) / 32;
        int registersPerWarp = (registersPerThread * 32 + 255) / 256 * 256;
        int byRegisters = registersPerMultiprocessor / (registersPerWarp * warps);
        int byShared = sharedBytesPerMultiprocessor / (sharedBytesPerBlock + 1024);
        int byThreads = maxThreadsPerMultiprocessor / (warps * 32);
        return Math.Max(1, Math.Min(32, Math.Min(byRegisters, Math.Min(byShared, byThreads))));
    }

    private static int ChooseSplits(int batch, int kvHeads, int rowChunks, int maxLength, int pageSize,
        int multiprocessors, int blocksPerMultiprocessor, int limit)
    {
        long blocks = (long)batch * kvHeads * rowChunks;
        if (blocks >= 2L * multiprocessors) return 1;
        int minKeys = Math.Max(pageSize, MinKeysPerSplit);
        int most = (int)Math.Min(limit, maxLength / minKeys);   // every split keeps at least minKeys keys
        if (most <= 1) return 1;
        long slots = (long)multiprocessors * blocksPerMultiprocessor;
        double best = 0;
        var efficiency = new double[most + 1];
        for (int s = 1; s <= most; s++)
        {
            double waves = (double)(blocks * s) / slots;
            efficiency[s] = waves / Math.Ceiling(waves);
            best = Math.Max(best, efficiency[s]);
        }
        for (int s = 1; s <= most; s++)
        {
            if (efficiency[s] >= 0.85 * best) return s;
        }
        return 1;
    }

    /// <summary>Page-aligned split size for <paramref name="splits"/> partitions, and the partitions that size really needs.</summary>
    private static DecodePlan Layout(int splits, int maxLength, int pageSize, int rowChunks)
    {
        if (splits <= 1 || maxLength <= pageSize)
        {
            return new DecodePlan(1, Math.Max(pageSize, RoundUp(maxLength, pageSize)), rowChunks);
        }
        int keys = RoundUp((int)(((long)maxLength + splits - 1) / splits), pageSize);
        int needed = (int)(((long)maxLength + keys - 1) / keys);
        return new DecodePlan(needed, keys, rowChunks);
    }

    private static int RoundUp(int value, int multiple) => (int)(((long)value + multiple - 1) / multiple * multiple);

    /// <summary>
    /// Packs the block tables and lengths of <paramref name="sequences"/> (batch entry b reads sequence
    /// <c>sequences[b]</c>) for the device: <paramref name="lengths"/>[b] = its length, row b of
    /// <paramref name="tables"/> (<paramref name="stride"/> ints) = its pages in position order, the rest of the row 0.
    /// </summary>
    /// <exception cref="ArgumentException">A sequence does not exist, or a destination is too short.</exception>
    public static void PackBlockTables(PageAllocator allocator, ReadOnlySpan<int> sequences, int stride, Span<int> lengths, Span<int> tables)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        if (lengths.Length < sequences.Length || tables.Length < (long)sequences.Length * stride)
        {
            throw new ArgumentException($"{sequences.Length} sequences need {sequences.Length} lengths and {(long)sequences.Length * stride} table entries; got {lengths.Length} and {tables.Length}.", nameof(tables));
        }
        for (int b = 0; b < sequences.Length; b++)
        {
            RequireLive(allocator, sequences, b);
            var pages = allocator.BlockTable(sequences[b]);
            if (pages.Length > stride)
            {
                throw new ArgumentException($"sequences[{b}] = {sequences[b]} has {pages.Length} pages; the table stride is {stride}.", nameof(stride));
            }
            lengths[b] = allocator.Length(sequences[b]);
            var row = tables.Slice(b * stride, stride);
            pages.CopyTo(row);
            row[pages.Length..].Clear();
        }
    }

    /// <summary>Ints per packed block-table row for <paramref name="sequences"/>: their most pages (at least 1).</summary>
    /// <exception cref="ArgumentException">A sequence does not exist.</exception>
    public static int TableStride(PageAllocator allocator, ReadOnlySpan<int> sequences)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        int stride = 1;
        for (int b = 0; b < sequences.Length; b++)
        {
            RequireLive(allocator, sequences, b);
            stride = Math.Max(stride, allocator.BlockTable(sequences[b]).Length);
        }
        return stride;
    }

    internal static void RequireLive(PageAllocator allocator, ReadOnlySpan<int> sequences, int b)
    {
        if (!allocator.Sequences.Contains(sequences[b]))
        {
            throw new ArgumentException($"sequences[{b}] = {sequences[b]} is not a live sequence of the cache.", nameof(sequences));
        }
    }
}
