// Pure host-side packing of a GPU decode launch: pool geometry, the staged lengths/block-table ints, the shape checks
// every launch must pass, and the fa_decode_params struct, kernel names and grids built from DecodePlanner's plan.
// CudaDecode launches exactly what this builds; the emulated tests build it too, with host addresses for device ones.
using System.Numerics;
using FastAttention.Caching;
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Gpu;

/// <summary>
/// Layout of a K or V pool: row of KV head h, page p, slot s starts at element
/// <c>h * HeadStride + p * PageStride + s * HeadDim</c> (64-bit).
/// </summary>
internal readonly record struct KvPoolGeometry(int PageSize, int KvHeads, int HeadDim, long HeadStride)
{
    /// <summary>Elements per page of one head.</summary>
    public long PageStride => (long)PageSize * HeadDim;

    /// <summary>log2 of <see cref="PageSize"/> (a power of two).</summary>
    public int PageShift => BitOperations.Log2((uint)PageSize);

    /// <summary>A paged pool <c>[Hkv, pageCount, pageSize, D]</c>.</summary>
    public static KvPoolGeometry Paged(int pageCount, int pageSize, int kvHeads, int headDim) =>
        new(pageSize, kvHeads, headDim, (long)pageCount * pageSize * headDim);
}

/// <summary>Strides, in elements, of a <c>[B, q, H, D]</c> tensor (D contiguous) or of LSE <c>[B, H, q]</c>.</summary>
internal readonly record struct Strides3(long B, long Second, long Third);

/// <summary>
/// The ints a paged decode stages for the device: <c>[lengths: B][tables: B x TableStride]</c>, and where each part
/// starts once uploaded to address <c>base</c>.
/// </summary>
internal readonly record struct PagedDecodeTables(int Batch, int TableStride, int MaxLength)
{
    /// <summary>Ints to stage.</summary>
    public int Ints => Batch + Batch * TableStride;

    /// <summary>Address of the lengths when the staged ints start at <paramref name="staged"/>.</summary>
    public static nint Lengths(nint staged) => staged;

    /// <summary>Address of the block tables when the staged ints start at <paramref name="staged"/>.</summary>
    public nint Tables(nint staged) => staged + (nint)Batch * sizeof(int);

    /// <summary>
    /// Sizes the staging for <paramref name="sequences"/> (batch entry b reads <c>sequences[b]</c>) without writing anything.
    /// </summary>
    /// <exception cref="ArgumentException">A sequence does not exist, or the tables pass int.MaxValue ints.</exception>
    public static PagedDecodeTables Measure(PageAllocator allocator, ReadOnlySpan<int> sequences)
    {
        int stride = DecodePlanner.TableStride(allocator, sequences);
        int maxLength = 0;
        foreach (int s in sequences) maxLength = Math.Max(maxLength, allocator.Length(s));
        RequireStageable(sequences.Length, stride);
        return new PagedDecodeTables(sequences.Length, stride, maxLength);
    }

    /// <summary>
    /// The table stride <see cref="Measure"/> will find once <paramref name="appended"/> tokens have been appended to each of
    /// <paramref name="sequences"/>: their most pages after the append (at least 1).
    /// </summary>
    /// <exception cref="ArgumentException">A sequence does not exist.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="appended"/> is negative.</exception>
    public static long StrideAfterAppend(PageAllocator allocator, ReadOnlySpan<int> sequences, int appended)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        ArgumentOutOfRangeException.ThrowIfNegative(appended);
        long stride = 1;
        for (int b = 0; b < sequences.Length; b++)
        {
            DecodePlanner.RequireLive(allocator, sequences, b);
            long length = (long)allocator.Length(sequences[b]) + appended;
            stride = Math.Max(stride, (length + allocator.PageSize - 1) / allocator.PageSize);
        }
        return stride;
    }

    /// <summary>The <see cref="Ints"/> of a batch of <paramref name="batch"/> entries with tables of <paramref name="tableStride"/> ints must fit an int.</summary>
    /// <exception cref="ArgumentException">They do not.</exception>
    public static void RequireStageable(int batch, long tableStride)
    {
        if (batch + batch * tableStride > int.MaxValue)
        {
            throw new ArgumentException(
                $"{batch} sequences with block tables of {tableStride} pages need {batch + batch * tableStride} staged ints; at most {int.MaxValue} fit one launch.", "sequences");
        }
    }

    /// <summary><paramref name="plan"/> reading the lengths and tables staged at <paramref name="staged"/>.</summary>
    public DecodeLaunchPlan Bind(DecodeLaunchPlan plan, nint staged)
    {
        ArgumentNullException.ThrowIfNull(plan);
        return plan.WithTables(Tables(staged), Lengths(staged));
    }

    /// <summary>Writes the lengths and block tables into <paramref name="staging"/> (<see cref="Ints"/> long).</summary>
    /// <exception cref="ArgumentException">A sequence does not exist or changed since <see cref="Measure"/>, or the span is too short.</exception>
    public void Pack(PageAllocator allocator, ReadOnlySpan<int> sequences, Span<int> staging)
    {
        if (staging.Length < Ints)
        {
            throw new ArgumentException($"staging has {staging.Length} ints; {Ints} are needed.", nameof(staging));
        }
        DecodePlanner.PackBlockTables(allocator, sequences, TableStride, staging[..Batch], staging.Slice(Batch, Batch * TableStride));
    }
}

/// <summary>
/// The GPU a decode is planned for: SM count, resident tuned decode blocks per SM, and the most dynamic shared memory a
/// block may opt in to (the tuned fp16/bf16 kernel falls back to the plain one where its K/V ring does not fit).
/// </summary>
internal readonly record struct DecodeDevice(int Multiprocessors, int BlocksPerMultiprocessor, int SharedMemoryPerBlockOptIn = int.MaxValue);

/// <summary>Device (or, in emulation, host) addresses and strides a decode launch reads and writes.</summary>
internal readonly record struct DecodeOperands(
    nint Query, Strides3 QueryStrides, nint Output, Strides3 OutputStrides, nint Lse, Strides3 LseStrides,
    nint KeyPool, nint ValuePool, nint Tables, int TableStride, nint Lengths);

/// <summary>
/// One decode launch, fully packed: the split plan, the parameter struct (without the split scratch addresses, see
/// <see cref="Parameters"/>), the decode kernel's name and grid, and the combine launch when the context is split.
/// </summary>
internal sealed record DecodeLaunchPlan(DecodePlan Split, DecodeParams BaseParameters, string KernelName, LaunchConfig Config,
    string CombineName, LaunchConfig? CombineConfig, long ScratchElements, long PartialLseOffset)
{
    private const float Log2E = 1.44269504088896341f;

    /// <summary>Threads per block of the decode and combine kernels.</summary>
    public const int Threads = 128;

    /// <summary>Output rows one combine block merges.</summary>
    public const int CombineRowsPerBlock = 4;

    /// <summary>Name of the decode kernel <paramref name="kernel"/> for <paramref name="type"/> and head dim <paramref name="headDim"/>.</summary>
    public static string DecodeKernelName(DecodeKernel kernel, KernelElementType type, int headDim) =>
        kernel == DecodeKernel.Plain ? $"fa_paged_decode_simt_hd{headDim}_{type.Suffix()}" : $"fa_paged_decode_hd{headDim}_{type.Suffix()}";

    /// <summary>Keys per K/V tile of the tuned fp16/bf16 kernel (paged_decode.cu FA_KT: 16 per warp).</summary>
    public const int TunedKeysPerTile = 64;

    /// <summary>
    /// Dynamic shared memory of the tuned decode kernel: for fp16/bf16 a ring of K/V tiles (3 stages, 2 for D = 256; each
    /// stage <see cref="TunedKeysPerTile"/> keys of K and of V) plus two tiles' page ids, as paged_decode.cu's FA_SMEM_BYTES;
    /// 0 for fp32 (static shared memory only).
    /// </summary>
    public static int TunedSharedMemoryBytes(KernelElementType type, int headDim)
    {
        if (type == KernelElementType.Float32) return 0;
        int stages = headDim == 256 ? 2 : 3;
        return stages * 2 * TunedKeysPerTile * headDim * 2 + 2 * TunedKeysPerTile * sizeof(int);
    }

    /// <summary>Name of the split combine kernel.</summary>
    public static string CombineKernelName(KernelElementType type, int headDim) => $"fa_decode_combine_hd{headDim}_{type.Suffix()}";

    /// <summary>
    /// The launch limits a decode of this shape must meet, whatever the cache holds: batch entries and query row
    /// chunks per KV head within the grid's y/z limit, combine blocks within the x limit. <see cref="Create"/> runs the
    /// same checks; callers that must refuse before changing a cache (the module's incremental forward) run them first.
    /// </summary>
    /// <exception cref="ArgumentException">A limit is passed (named after <paramref name="paramName"/>, with the numbers).</exception>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive, or <paramref name="heads"/> is not a multiple of <paramref name="kvHeads"/>.</exception>
    public static void RequireLaunchable(int batch, int queryLength, int heads, int kvHeads, string paramName)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batch);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(queryLength);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(heads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvHeads);
        if (heads % kvHeads != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(heads), heads, $"heads {heads} must be a multiple of kvHeads {kvHeads}.");
        }
        if (batch > DecodePlanner.MaxGridYz)
        {
            throw new ArgumentException($"batch {batch} exceeds the {DecodePlanner.MaxGridYz} batch entries one decode launch covers.", paramName);
        }
        long rows = (long)queryLength * (heads / kvHeads);
        long chunks = (rows + DecodePlanner.RowsPerBlock - 1) / DecodePlanner.RowsPerBlock;
        if (chunks > DecodePlanner.MaxGridYz)
        {
            throw new ArgumentException(
                $"{queryLength} query rows x {heads / kvHeads} heads per KV head = {rows} rows need {chunks} blocks of {DecodePlanner.RowsPerBlock}; " +
                $"at most {DecodePlanner.MaxGridYz} fit one decode launch (at most {(long)DecodePlanner.MaxGridYz * DecodePlanner.RowsPerBlock / (heads / kvHeads)} query rows).", paramName);
        }
        long combineBlocks = ((long)batch * heads * queryLength + CombineRowsPerBlock - 1) / CombineRowsPerBlock;
        if (combineBlocks > int.MaxValue)
        {
            throw new ArgumentException($"{batch} x {heads} x {queryLength} output rows need {combineBlocks} combine blocks; at most {int.MaxValue} fit a grid.", paramName);
        }
    }

    /// <summary>Plans and packs one decode launch (no device access).</summary>
    /// <param name="type">Element type of the cache and activations.</param>
    /// <param name="pool">Pool geometry (Hkv, D, page size, strides).</param>
    /// <param name="batch">Batch entries B.</param>
    /// <param name="queryLength">Query rows per entry q.</param>
    /// <param name="heads">Query heads H (a multiple of Hkv).</param>
    /// <param name="maxLength">Longest cached length in the batch.</param>
    /// <param name="scale">Resolved softmax scale.</param>
    /// <param name="mask">Causal flag and window (lengths and block masks are not read).</param>
    /// <param name="options">Kernel version, softcap, forced split count.</param>
    /// <param name="device">SMs and resident blocks per SM for the split heuristic.</param>
    /// <param name="operands">Addresses and strides.</param>
    /// <exception cref="ArgumentException">As <see cref="RequireLaunchable"/>, with <c>query</c> as the argument named.</exception>
    public static DecodeLaunchPlan Create(KernelElementType type, KvPoolGeometry pool, int batch, int queryLength, int heads, int maxLength,
        float scale, AttentionMask mask, GpuDecodeOptions options, DecodeDevice device, in DecodeOperands operands)
    {
        ArgumentNullException.ThrowIfNull(mask);
        ArgumentNullException.ThrowIfNull(options);
        RequireLaunchable(batch, queryLength, heads, pool.KvHeads, "query");
        int group = heads / pool.KvHeads, d = pool.HeadDim;
        var plan = DecodePlanner.Plan(batch, pool.KvHeads, queryLength * group, maxLength, pool.PageSize,
            device.Multiprocessors, device.BlocksPerMultiprocessor, options.Splits);
        float softcap = options.Softcap;
        var p = new DecodeParams
        {
            Q = operands.Query, KPool = operands.KeyPool, VPool = operands.ValuePool,
            BlockTables = operands.Tables, SeqLens = operands.Lengths, O = operands.Output, Lse = operands.Lse,
            QStrideB = operands.QueryStrides.B, QStrideS = operands.QueryStrides.Second, QStrideH = operands.QueryStrides.Third,
            OStrideB = operands.OutputStrides.B, OStrideS = operands.OutputStrides.Second, OStrideH = operands.OutputStrides.Third,
            LseStrideB = operands.LseStrides.B, LseStrideH = operands.LseStrides.Second, LseStrideS = operands.LseStrides.Third,
            KvHeadStride = pool.HeadStride, PageStride = pool.PageStride,
            Batch = batch, QLen = queryLength, Heads = heads, KvHeads = pool.KvHeads, Group = group,
            TableStride = operands.TableStride, PageShift = pool.PageShift,
            Causal = mask.Causal ? 1 : 0, WindowLeft = mask.WindowLeft, WindowRight = mask.WindowRight,
            NumSplits = plan.Splits, KeysPerSplit = plan.KeysPerSplit, RowChunks = plan.RowChunks,
            ScaleLog2 = scale * Log2E,
            Softcap = softcap, SoftcapLog2 = softcap * Log2E, ScaleOverSoftcap = softcap > 0 ? scale / softcap : 0,
        };
        int smem = TunedSharedMemoryBytes(type, d);
        // The tuned kernel's K/V ring must fit the device's per-block shared memory (D = 256 fp16/bf16 needs 128.5 KiB:
        // sm_80/sm_90 have it, sm_86/sm_89 do not); otherwise the plain kernel runs.
        var kernel = smem > device.SharedMemoryPerBlockOptIn ? DecodeKernel.Plain : options.Kernel;
        bool plain = kernel == DecodeKernel.Plain;
        var config = plain
            ? new LaunchConfig(new Dim3((uint)heads, (uint)batch, (uint)plan.Splits), Threads)
            : new LaunchConfig(new Dim3((uint)pool.KvHeads, (uint)batch, (uint)(plan.RowChunks * plan.Splits)), Threads, smem);
        LaunchConfig? combine = null;
        long scratch = 0, lseOffset = 0;
        if (plan.Splits > 1)
        {
            long outputRows = (long)batch * heads * queryLength;
            scratch = outputRows * plan.Splits * (d + 1);
            lseOffset = outputRows * plan.Splits * d;
            combine = new LaunchConfig((uint)((outputRows + CombineRowsPerBlock - 1) / CombineRowsPerBlock), Threads);
        }
        return new DecodeLaunchPlan(plan, p, DecodeKernelName(kernel, type, d), config, CombineKernelName(type, d), combine, scratch, lseOffset);
    }

    /// <summary>This plan reading block tables at <paramref name="tables"/> and lengths at <paramref name="lengths"/>.</summary>
    public DecodeLaunchPlan WithTables(nint tables, nint lengths) =>
        this with { BaseParameters = BaseParameters with { BlockTables = tables, SeqLens = lengths } };

    /// <summary>
    /// The parameter struct to launch with: with splits, the partial outputs <c>[B x H x q x splits, D]</c> fp32 start at
    /// <paramref name="scratch"/> (<see cref="ScratchElements"/> floats in all) and their LSEs at element
    /// <see cref="PartialLseOffset"/>; without splits the scratch is not read and its address is ignored.
    /// </summary>
    public DecodeParams Parameters(nint scratch)
    {
        var p = BaseParameters;
        if (Split.Splits > 1)
        {
            p.PartO = scratch;
            p.PartLse = scratch + (nint)(PartialLseOffset * sizeof(float));
        }
        return p;
    }
}
