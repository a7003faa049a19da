// Host-side planning of one CUDA attention forward, with no device involved: argument checks (the same exception
// types and argument names as CpuAttention.Forward), kernel choice, grid, packed parameters and the block-sparse
// key-tile lists. Everything here is unit-tested on the CPU.
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Gpu;

/// <summary>Which kernel a forward uses.</summary>
internal enum AttentionKernelMode
{
    /// <summary>Key/query lengths only.</summary>
    Dense,
    /// <summary>Causal and/or sliding window (row-range masks), with lengths.</summary>
    Causal,
    /// <summary>Block-sparse tile list (and any of the above).</summary>
    Sparse,
}

/// <summary>Where a device tensor lives and how it is laid out (element strides); what the planner needs of it.</summary>
internal readonly record struct TensorDesc(nint Pointer, nint[] Lengths, nint[] Strides)
{
    public static TensorDesc Of<T>(DeviceTensor<T> t) where T : unmanaged =>
        new(t.DevicePointer, t.Lengths.ToArray(), t.Strides.ToArray());

    public int Rank => Lengths.Length;
}

/// <summary>Everything needed to launch one forward: kernel, grid, parameters and the small tables to upload.</summary>
internal sealed class ForwardPlan
{
    public required AttentionShape Shape { get; init; }
    public required KernelSpecialization Specialization { get; init; }
    public required string KernelName { get; init; }
    public required LaunchConfig Launch { get; init; }
    /// <summary>Tuned traits, or null for the SIMT kernel.</summary>
    public AttentionKernelTraits? Traits { get; init; }
    public AttentionKernelMode Mode { get; init; }
    /// <summary>Parameters with every table pointer 0; <see cref="WithTables"/> fills them once uploaded.</summary>
    public required AttentionForwardParams Params { get; init; }
    /// <summary>All tables in one int array (lengths, tile offsets, tile entries, block flags); empty when none is needed.</summary>
    public required int[] Tables { get; init; }
    public int KeyLengthsAt { get; init; } = -1;
    public int QueryLengthsAt { get; init; } = -1;
    public int TileOffsetsAt { get; init; } = -1;
    public int TileEntriesAt { get; init; } = -1;
    public int BlockKeepAt { get; init; } = -1;

    public bool UsesTunedKernel => Traits is not null;

    /// <summary>The parameters with the table pointers set for tables uploaded at device address <paramref name="tables"/>.</summary>
    public AttentionForwardParams WithTables(nint tables)
    {
        var p = Params;
        p.KeyLengths = At(tables, KeyLengthsAt);
        p.QueryLengths = At(tables, QueryLengthsAt);
        p.TileOffsets = At(tables, TileOffsetsAt);
        p.TileEntries = At(tables, TileEntriesAt);
        p.BlockKeep = At(tables, BlockKeepAt);
        return p;
    }

    private static nint At(nint tables, int offset) => offset < 0 ? 0 : tables + offset * sizeof(int);
}

/// <summary>Plans CUDA attention forwards (pure functions).</summary>
internal static class AttentionForwardPlanner
{
    /// <summary>Query rows per block of the SIMT kernel (FA_SIMT_WARPS in attention_fwd_simt.cu).</summary>
    public const int SimtRowsPerBlock = 4;

    /// <summary>Largest grid y/z extent (heads, batch).</summary>
    public const int MaxGridYZ = 65535;

    /// <summary>
    /// Checks every argument and plans the launch. Throws before anything is changed, with the argument names
    /// the CPU engine's Forward uses: query, key, value, output, logSumExp, options.
    /// </summary>
    /// <exception cref="ArgumentException">Any check fails (see <see cref="CudaAttention.Forward{T}"/>).</exception>
    public static ForwardPlan Plan(KernelElementType type, TensorDesc q, TensorDesc k, TensorDesc v, TensorDesc o,
        TensorDesc? lse, AttentionOptions options, CudaKernelVariant variant)
    {
        var shape = ShapeOf(q, k, v);
        var traits = AttentionKernelTraits.For(shape.HeadDim);
        RequireDestination(o, [shape.Batch, shape.QueryLength, shape.Heads, shape.HeadDim], "output", "[B, Sq, H, D]");
        if (lse is { } l)
        {
            RequireDestination(l, [shape.Batch, shape.Heads, shape.QueryLength], "logSumExp", "[B, H, Sq]");
        }
        shape.RequireMaskFits(options.Mask, nameof(options));
        if (shape.Heads > MaxGridYZ || shape.Batch > MaxGridYZ)
        {
            throw new ArgumentException(
                $"query has B = {shape.Batch} and H = {shape.Heads}; the CUDA kernels take at most {MaxGridYZ} of each (grid y and z).", "query");
        }

        int elementSize = type == KernelElementType.Float32 ? 4 : 2;
        bool tuned = variant == CudaKernelVariant.Tuned && type != KernelElementType.Float32
            && TunedLayoutOk(q, elementSize) && TunedLayoutOk(k, elementSize) && TunedLayoutOk(v, elementSize) && TunedLayoutOk(o, elementSize);
        var mask = options.Mask;
        var mode = mask.BlockMask is not null ? AttentionKernelMode.Sparse
            : mask.Causal || mask.WindowLeft >= 0 || mask.WindowRight >= 0 ? AttentionKernelMode.Causal
            : AttentionKernelMode.Dense;

        int mTiles = tuned ? CeilDiv(shape.QueryLength, traits.BlockM) : CeilDiv(shape.QueryLength, SimtRowsPerBlock);
        var tables = new List<int>();
        int keyAt = Append(tables, mask.KeyLengths);
        int queryAt = Append(tables, mask.QueryLengths);
        int offsetsAt = -1, entriesAt = -1, keepAt = -1;
        if (mask.BlockMask is { } bm)
        {
            if (tuned)
            {
                var (offsets, entries) = BuildTileList(bm, shape.QueryLength, shape.KeyLength, traits.BlockM, traits.BlockN);
                offsetsAt = Append(tables, offsets);
                entriesAt = Append(tables, entries);
            }
            keepAt = Append(tables, Flags(bm));
        }

        float scale = options.ResolveScale(shape.HeadDim);
        var p = new AttentionForwardParams
        {
            Q = q.Pointer, K = k.Pointer, V = v.Pointer, O = o.Pointer, Lse = lse?.Pointer ?? 0,
            QStrideB = q.Strides[0], QStrideS = q.Strides[1], QStrideH = q.Strides[2], QStrideD = q.Strides[3],
            KStrideB = k.Strides[0], KStrideS = k.Strides[1], KStrideH = k.Strides[2], KStrideD = k.Strides[3],
            VStrideB = v.Strides[0], VStrideS = v.Strides[1], VStrideH = v.Strides[2], VStrideD = v.Strides[3],
            OStrideB = o.Strides[0], OStrideS = o.Strides[1], OStrideH = o.Strides[2], OStrideD = o.Strides[3],
            LseStrideB = lse?.Strides[0] ?? 0, LseStrideH = lse?.Strides[1] ?? 0, LseStrideS = lse?.Strides[2] ?? 0,
            Batch = shape.Batch, SeqQ = shape.QueryLength, SeqK = shape.KeyLength, Heads = shape.Heads,
            KvHeads = shape.KvHeads, HeadDim = shape.HeadDim, Group = shape.GroupSize,
            Causal = mask.Causal ? 1 : 0, WindowLeft = mask.WindowLeft, WindowRight = mask.WindowRight,
            MaskHeads = mask.BlockMask?.Heads ?? 1, MaskBlockQ = mask.BlockMask?.BlockSizeQ ?? 1, MaskBlockK = mask.BlockMask?.BlockSizeK ?? 1,
            MaskQueryBlocks = mask.BlockMask?.QueryBlocks ?? 1, MaskKeyBlocks = mask.BlockMask?.KeyBlocks ?? 1,
            QueryTiles = mTiles,
            QuerySign = QuerySign(scale), Factor = Factor(scale),
        };

        KernelSpecialization spec;
        string kernel;
        LaunchConfig launch;
        if (tuned)
        {
            spec = KernelRegistry.AttentionForward(shape.HeadDim, type);
            kernel = KernelRegistry.AttentionForwardKernelName(shape.HeadDim, type, mode);
            launch = new LaunchConfig(new Dim3((uint)mTiles, (uint)shape.Heads, (uint)shape.Batch), new Dim3((uint)traits.Threads), traits.SharedMemoryBytes);
        }
        else
        {
            spec = KernelRegistry.AttentionForwardSimt(type);
            kernel = spec.KernelNames[0];
            launch = new LaunchConfig(new Dim3((uint)mTiles, (uint)shape.Heads, (uint)shape.Batch), new Dim3(32 * SimtRowsPerBlock));
        }
        return new ForwardPlan
        {
            Shape = shape, Specialization = spec, KernelName = kernel, Launch = launch, Traits = tuned ? traits : null, Mode = mode,
            Params = p, Tables = [.. tables],
            KeyLengthsAt = keyAt, QueryLengthsAt = queryAt, TileOffsetsAt = offsetsAt, TileEntriesAt = entriesAt, BlockKeepAt = keepAt,
        };
    }

    /// <summary>
    /// True when the tuned kernel can read and write <paramref name="t"/>: head-dim stride 1, the other strides
    /// multiples of 16 bytes and a 16-byte aligned base (its 16-byte cp.async loads and 4-byte pair stores).
    /// </summary>
    public static bool TunedLayoutOk(TensorDesc t, int elementSize)
    {
        int perChunk = 16 / elementSize;
        if (t.Strides[3] != 1 || t.Pointer % 16 != 0) return false;
        for (int i = 0; i < 3; i++)
        {
            if (t.Lengths[i] > 1 && t.Strides[i] % perChunk != 0) return false;
        }
        return true;
    }

    /// <summary>
    /// The key tiles each (mask head, query tile) must visit: CSR <c>offsets</c> (<c>[maskHeads · mTiles + 1]</c>)
    /// into <c>entries</c> of <c>(keyTile &lt;&lt; 1) | partial</c>, ascending. A key tile is listed when any
    /// (row, key) pair of the tile inside <c>[0, Sq) x [0, Sk)</c> lies in a kept block; it is partial unless every
    /// such pair does (then the kernel checks the block flags per element). Tiles with nothing kept are absent.
    /// </summary>
    public static (int[] Offsets, int[] Entries) BuildTileList(BlockSparseMask mask, int seqQ, int seqK, int blockM, int blockN)
    {
        int mTiles = CeilDiv(seqQ, blockM), nTiles = CeilDiv(seqK, blockN);
        int kBlocks = mask.KeyBlocks;
        var offsets = new int[mask.Heads * mTiles + 1];
        var entries = new List<int>();
        var any = new bool[kBlocks];
        var all = new bool[kBlocks];
        for (int hm = 0; hm < mask.Heads; hm++)
        {
            for (int mt = 0; mt < mTiles; mt++)
            {
                int r0 = mt * blockM, r1 = Math.Min(seqQ, r0 + blockM);
                int qb0 = r0 / mask.BlockSizeQ, qb1 = (r1 - 1) / mask.BlockSizeQ;
                Array.Fill(any, false);
                Array.Fill(all, true);
                for (int qb = qb0; qb <= qb1; qb++)
                {
                    var row = mask.Row(hm, qb);
                    for (int kb = 0; kb < kBlocks; kb++)
                    {
                        any[kb] |= row[kb];
                        all[kb] &= row[kb];
                    }
                }
                for (int nt = 0; nt < nTiles; nt++)
                {
                    int c0 = nt * blockN, c1 = Math.Min(seqK, c0 + blockN);
                    int kb0 = c0 / mask.BlockSizeK, kb1 = (c1 - 1) / mask.BlockSizeK;
                    bool anyKept = false, allKept = true;
                    for (int kb = kb0; kb <= kb1; kb++)
                    {
                        anyKept |= any[kb];
                        allKept &= all[kb];
                    }
                    if (anyKept) entries.Add((nt << 1) | (allKept ? 0 : 1));
                }
                offsets[hm * mTiles + mt + 1] = entries.Count;
            }
        }
        return (offsets, [.. entries]);
    }

    /// <summary>Multiplier folded into Q: the sign of the scale, 0 for a zero scale (as the CPU engine's LogitScale).</summary>
    public static float QuerySign(float scale) => scale > 0 ? 1f : scale < 0 ? -1f : 0f;

    /// <summary>|scale| · log2(e), or 1 for a zero scale (as the CPU engine's LogitScale).</summary>
    public static float Factor(float scale) => scale == 0 ? 1f : MathF.Abs(scale) * 1.44269504088896341f;

    /// <summary>Q, K, V ranks and sizes, with AttentionShape.FromTensors's checks and messages.</summary>
    private static AttentionShape ShapeOf(TensorDesc q, TensorDesc k, TensorDesc v) => AttentionShape.FromLengths(q.Lengths, k.Lengths, v.Lengths);

    /// <summary>Exact lengths and no stride 0 on a dimension longer than 1 (AttentionShape.RequireDestination's rule).</summary>
    private static void RequireDestination(TensorDesc t, nint[] expected, string paramName, string layout) =>
        AttentionShape.RequireDestination(t.Lengths, t.Strides, expected, paramName, layout);

    private static int[] Flags(BlockSparseMask bm)
    {
        var flags = new int[bm.Heads * bm.QueryBlocks * bm.KeyBlocks];
        int n = 0;
        for (int h = 0; h < bm.Heads; h++)
        {
            for (int qb = 0; qb < bm.QueryBlocks; qb++)
            {
                foreach (bool kept in bm.Row(h, qb)) flags[n++] = kept ? 1 : 0;
            }
        }
        return flags;
    }

    private static int Append(List<int> tables, int[]? values)
    {
        if (values is null) return -1;
        int at = tables.Count;
        tables.AddRange(values);
        return at;
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;
}
