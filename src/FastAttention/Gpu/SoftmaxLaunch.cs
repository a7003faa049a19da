// Host-side planning of the fused softmax (softmax.cu): which kernel, grid and block; the packed launch parameters;
// the mask data the kernel reads from device memory. Pure functions, unit-tested without a GPU.
using System.Runtime.InteropServices;
using FastAttention.Compilation;

namespace FastAttention.Gpu;

/// <summary>The kernels of <c>softmax.cu</c>.</summary>
internal enum SoftmaxKernel
{
    /// <summary><c>fa_softmax_plain_*</c>: one warp per row, three passes over memory.</summary>
    Plain,
    /// <summary><c>fa_softmax_group_*</c>: <see cref="SoftmaxPlan.GroupThreads"/> threads per row, several rows per warp, values in registers; Sk up to <see cref="SoftmaxPlan.GroupMaxKeys"/>.</summary>
    Group,
    /// <summary><c>fa_softmax_warp_*</c>: one warp per row, values in registers; Sk up to <see cref="SoftmaxPlan.WarpMaxKeys"/>.</summary>
    Warp,
    /// <summary><c>fa_softmax_block_*</c>: one CTA per row, values in registers; Sk up to <see cref="SoftmaxPlan.BlockMaxKeys"/>.</summary>
    Block,
    /// <summary><c>fa_softmax_online_*</c>: one CTA per row, online max/sum, any Sk.</summary>
    Online,
}

/// <summary>A softmax launch: kernel, block size, rows per CTA and grid (grid-stride over rows).</summary>
internal readonly record struct SoftmaxPlan(SoftmaxKernel Kernel, int ThreadsPerBlock, int RowsPerBlock, int Grid)
{
    /// <summary>Threads per row of the group kernel.</summary>
    public const int GroupThreads = 8;

    /// <summary>Longest row the group kernel holds in registers: 8 threads x 32 values.</summary>
    public const int GroupMaxKeys = GroupThreads * 32;

    /// <summary>Longest row the warp kernel holds in registers: 32 lanes x 32 values.</summary>
    public const int WarpMaxKeys = 32 * 32;

    /// <summary>Longest row the block kernel holds in registers: 256 threads x 32 values.</summary>
    public const int BlockMaxKeys = 256 * 32;

    /// <summary>Resident CTAs per SM the grid aims for; beyond that the kernels loop over rows (grid-stride).</summary>
    public const int BlocksPerMultiprocessor = 16;

    /// <summary>The kernel's name for an element type, e.g. <c>fa_softmax_warp_f16</c>.</summary>
    public string KernelName(KernelElementType type) => $"fa_softmax_{Kernel.ToString().ToLowerInvariant()}_{type.Suffix()}";

    /// <summary>
    /// Chooses the kernel for <paramref name="rows"/> rows of <paramref name="keys"/> keys: the plain variant always
    /// runs the plain kernel; the tuned one, for rows with a unit last stride (<paramref name="unitStride"/>), 8 threads
    /// per row up to 256 keys (16 rows per CTA: the per-row work is shared by fewer lanes; measured on an H200 at 128
    /// keys, one warp per row spent ~2 ns of the whole GPU per row whatever the length), a warp per row up to 1024
    /// keys and a CTA with the row in registers up to 8192, and otherwise (longer rows, strided
    /// rows) the online CTA kernel. Whether accesses are 16 bytes wide is decided per call by the kernels. The grid covers every
    /// row, capped at <see cref="BlocksPerMultiprocessor"/> CTAs per SM.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A count is not positive.</exception>
    public static SoftmaxPlan For(long rows, int keys, bool unitStride, CudaKernelVariant variant, int multiprocessors)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(keys);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(multiprocessors);
        (SoftmaxKernel kernel, int threads, int rowsPerBlock) =
            variant == CudaKernelVariant.Plain ? (SoftmaxKernel.Plain, 128, 4)
            : unitStride && keys <= GroupMaxKeys ? (SoftmaxKernel.Group, 128, 128 / GroupThreads)
            : unitStride && keys <= WarpMaxKeys ? (SoftmaxKernel.Warp, 128, 4)
            : unitStride && keys <= BlockMaxKeys ? (SoftmaxKernel.Block, 256, 1)
            : (SoftmaxKernel.Online, 256, 1);
        long needed = (rows + rowsPerBlock - 1) / rowsPerBlock;
        long cap = (long)multiprocessors * BlocksPerMultiprocessor;
        return new SoftmaxPlan(kernel, threads, rowsPerBlock, (int)Math.Min(needed, cap));
    }
}

/// <summary>
/// The kernel's parameter block, <c>fa_softmax_params</c> in <c>softmax.cu</c>: same field order, natural
/// alignment, 176 bytes (the kernel static_asserts the size; a unit test checks this side's offsets).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct SoftmaxParams
{
    public nint X, Y, QueryLengths, KeyLengths, Keep;
    public long Xs0, Xs1, Xs2, Xs3;
    public long Ys0, Ys1, Ys2, Ys3;
    public long Rows;
    public int Batch, Heads, Sq, Sk;
    public int Causal, WindowLeft, WindowRight;
    public int MaskHeads, QueryBlocks, KeyBlocks, BlockSizeQ, BlockSizeK;
    public float Sign, Log2Scale;
    public int Vec, Unit;

    /// <summary>Size of the C struct.</summary>
    public const int Size = 176;

    /// <summary>
    /// Builds the parameters. Strides of dimensions of length 1 are set to 0 (never used, and then they do not
    /// prevent 16-byte accesses). <paramref name="maskData"/> is the device address of the packed mask data
    /// (<see cref="SoftmaxMaskData"/>), 0 when the mask needs none.
    /// </summary>
    public static SoftmaxParams Create(nint x, ReadOnlySpan<nint> xStrides, nint y, ReadOnlySpan<nint> yStrides,
        ReadOnlySpan<nint> lengths, int elementSize, float scale, AttentionMask mask, nint maskData, SoftmaxMaskData layout)
    {
        var p = new SoftmaxParams
        {
            X = x,
            Y = y,
            Batch = (int)lengths[0],
            Heads = (int)lengths[1],
            Sq = (int)lengths[2],
            Sk = (int)lengths[3],
            Rows = (long)lengths[0] * lengths[1] * lengths[2],
            Causal = mask.Causal ? 1 : 0,
            WindowLeft = mask.WindowLeft,
            WindowRight = mask.WindowRight,
            Sign = scale > 0 ? 1f : scale < 0 ? -1f : 0f,
            Log2Scale = (scale == 0 ? 1f : MathF.Abs(scale)) * (float)(1.0 / Math.Log(2.0)),
            MaskHeads = 1,
            QueryBlocks = 1,
            KeyBlocks = 1,
            BlockSizeQ = 1,
            BlockSizeK = 1,
        };
        Span<long> xs = stackalloc long[4], ys = stackalloc long[4];
        for (int i = 0; i < 4; i++)
        {
            xs[i] = lengths[i] == 1 ? 0 : xStrides[i];
            ys[i] = lengths[i] == 1 ? 0 : yStrides[i];
        }
        (p.Xs0, p.Xs1, p.Xs2, p.Xs3) = (xs[0], xs[1], xs[2], xs[3]);
        (p.Ys0, p.Ys1, p.Ys2, p.Ys3) = (ys[0], ys[1], ys[2], ys[3]);
        p.Unit = (lengths[3] == 1 || (xs[3] == 1 && ys[3] == 1)) ? 1 : 0;
        p.Vec = CanVectorize(x, xs, lengths[3], elementSize) && CanVectorize(y, ys, lengths[3], elementSize) ? 1 : 0;
        if (maskData != 0)
        {
            if (layout.QueryLengthsOffset >= 0) p.QueryLengths = maskData + layout.QueryLengthsOffset;
            if (layout.KeyLengthsOffset >= 0) p.KeyLengths = maskData + layout.KeyLengthsOffset;
            if (layout.KeepOffset >= 0) p.Keep = maskData + layout.KeepOffset;
        }
        if (mask.BlockMask is { } bm)
        {
            (p.MaskHeads, p.QueryBlocks, p.KeyBlocks, p.BlockSizeQ, p.BlockSizeK) =
                (bm.Heads, bm.QueryBlocks, bm.KeyBlocks, bm.BlockSizeQ, bm.BlockSizeK);
        }
        return p;
    }

    /// <summary>
    /// True when every row of a tensor can be accessed with 16-byte loads/stores: unit last stride (or a single
    /// key), a 16-byte aligned base and row strides that are multiples of 16 bytes. Strides of length-1
    /// dimensions must already be 0.
    /// </summary>
    public static bool CanVectorize(nint basePointer, ReadOnlySpan<long> strides, nint keys, int elementSize)
    {
        if (basePointer % 16 != 0) return false;
        if (keys > 1 && strides[3] != 1) return false;
        long perVector = 16 / elementSize;
        for (int i = 0; i < 3; i++)
        {
            if (strides[i] % perVector != 0) return false;
        }
        return true;
    }
}

/// <summary>
/// The mask data the kernel reads from device memory, packed into one byte buffer: query lengths (int32 x B),
/// key lengths (int32 x B), block keep flags (one byte per block, <c>[heads, queryBlocks, keyBlocks]</c>).
/// Offsets are -1 for parts the mask does not have; all offsets are multiples of 4.
/// </summary>
internal readonly record struct SoftmaxMaskData(int QueryLengthsOffset, int KeyLengthsOffset, int KeepOffset, int Size)
{
    /// <summary>The layout for <paramref name="mask"/> (already checked against the shape).</summary>
    public static SoftmaxMaskData LayoutOf(AttentionMask mask)
    {
        int size = 0, q = -1, k = -1, keep = -1;
        if (mask.QueryLengths is { } ql)
        {
            q = size;
            size += 4 * ql.Length;
        }
        if (mask.KeyLengths is { } kl)
        {
            k = size;
            size += 4 * kl.Length;
        }
        if (mask.BlockMask is { } bm)
        {
            keep = size;
            size += checked(bm.Heads * bm.QueryBlocks * bm.KeyBlocks);
        }
        return new SoftmaxMaskData(q, k, keep, (size + 3) & ~3);
    }

    /// <summary>Writes the mask data into <paramref name="destination"/> (at least <see cref="Size"/> bytes).</summary>
    public void Write(AttentionMask mask, Span<byte> destination)
    {
        destination[..Size].Clear();
        if (mask.QueryLengths is { } ql) MemoryMarshal.AsBytes(ql.AsSpan()).CopyTo(destination[QueryLengthsOffset..]);
        if (mask.KeyLengths is { } kl) MemoryMarshal.AsBytes(kl.AsSpan()).CopyTo(destination[KeyLengthsOffset..]);
        if (mask.BlockMask is { } bm)
        {
            int n = 0;
            for (int h = 0; h < bm.Heads; h++)
            {
                for (int qb = 0; qb < bm.QueryBlocks; qb++)
                {
                    ReadOnlySpan<bool> row = bm.Row(h, qb);
                    for (int kb = 0; kb < row.Length; kb++) destination[KeepOffset + n++] = row[kb] ? (byte)1 : (byte)0;
                }
            }
        }
    }
}
