// Launch configuration of the tuned attention forward kernel per head dimension: tile sizes, warps, stages,
// shared memory, and why each was chosen.

namespace FastAttention.Gpu;

/// <summary>
/// Tile configuration of the tuned kernel (<c>attention_fwd.cu</c>) for one head dimension. A block of
/// <see cref="Warps"/> warps owns <see cref="BlockM"/> = 16 · warps query rows (one m16 row slice per warp, so a
/// row's max and sum need only a 4-lane shuffle) and walks the key axis in tiles of <see cref="BlockN"/> keys;
/// K and V tiles are double-buffered (<see cref="Stages"/> = 2) in shared memory.
/// </summary>
/// <param name="HeadDim">Head dimension D.</param>
/// <param name="Warps">Warps per block.</param>
/// <param name="BlockN">Keys per K/V tile (a multiple of 16).</param>
public sealed record AttentionKernelTraits(int HeadDim, int Warps, int BlockN)
{
    /// <summary>The head dimensions the tuned kernel is built for; others are rejected.</summary>
    public static IReadOnlyList<int> SupportedHeadDims { get; } = [32, 64, 80, 96, 128, 256];

    // The table. Registers per thread and shared memory per kernel are measured by KernelCompileTests (ptxas -v,
    // NVRTC 11.8, zero spills everywhere) and listed in native/kernels/README.md. Shared memory =
    // (BlockM + 2 stages x (K + V) x BlockN) x row x 2 B, where a row is D rounded up to 64 elements (the XOR swizzle
    // permutes 16-byte chunks within groups of 8). The kernels are bounded at (threads, 1 block) so ptxas may use up
    // to 255 registers: with its default it capped the 256-thread hd64 kernels at 128 registers and spilled.
    private static readonly AttentionKernelTraits[] s_table =
    [
        // D = 32: 8 warps x 16 rows = 128 rows per block (FlashAttention-2's block height), so each K/V tile in shared
        // memory serves 128 query rows. ~110-115 registers x 256 threads: 2 blocks (16 warps) per SM; 48 KiB of shared
        // memory (rows padded to 64 elements), no opt-in needed.
        new(32, Warps: 8, BlockN: 64),
        // D = 64: at 8 warps the kernels need ~150-155 registers x 256 threads, which leaves room for one block per SM
        // (8 warps); 4 warps (64 rows) fit 3 blocks (12 warps) in the register file, 40 KiB of shared memory each.
        new(64, Warps: 4, BlockN: 64),
        // D = 80, 96, 128: 4 warps (64 rows), 64-key tiles, as FlashAttention-2's hd96/hd128 tiles but with one m16
        // slice per warp instead of two, so S (32 fp32) + O (40..64 fp32) accumulators fit without spills
        // (~155-197 registers: 2-3 blocks per SM by registers). 80 KiB of shared memory (rows padded to 128
        // elements): 2 blocks per SM on A100 (164 KiB) and H100 (227 KiB).
        new(80, Warps: 4, BlockN: 64),
        new(96, Warps: 4, BlockN: 64),
        new(128, Warps: 4, BlockN: 64),
        // D = 256: 4 warps (64 rows, as FlashAttention-2 on H100) with 32-key tiles: O alone is 128 fp32 registers
        // per thread, so S is kept at 16 (248-255 registers, no spills); 32 keys also keep double-buffered K/V at
        // 64 KiB, 96 KiB in all, which fits A100's 163 KiB opt-in limit (64-key tiles would need 160 KiB).
        new(256, Warps: 4, BlockN: 32),
    ];

    /// <summary>Query rows per block: 16 per warp.</summary>
    public int BlockM => 16 * Warps;

    /// <summary>Threads per block.</summary>
    public int Threads => 32 * Warps;

    /// <summary>
    /// K/V pipeline depth: 2 (load tile n + 1 while tile n is computed). A third stage would cost another
    /// 2 x BlockN x row of shared memory for latency that one block's compute on a tile already hides.
    /// </summary>
    public int Stages => 2;

    /// <summary>Elements per shared-memory row: D rounded up to 64 (8 chunks of 16 bytes for the swizzle).</summary>
    public int SharedRowElements => (HeadDim + 63) / 64 * 64;

    /// <summary>Dynamic shared memory per block, in bytes: Q tile plus the K and V tiles of every stage (16-bit elements).</summary>
    public int SharedMemoryBytes => (BlockM + Stages * 2 * BlockN) * SharedRowElements * 2;

    /// <summary>The traits for <paramref name="headDim"/>.</summary>
    /// <exception cref="ArgumentException"><paramref name="headDim"/> is not one of <see cref="SupportedHeadDims"/> (named <c>query</c>, whose last dimension it is).</exception>
    public static AttentionKernelTraits For(int headDim)
    {
        foreach (var t in s_table)
        {
            if (t.HeadDim == headDim) return t;
        }
        throw new ArgumentException(
            $"query head dim {headDim} is not supported by the CUDA attention kernels; supported head dims are {string.Join(", ", SupportedHeadDims)}.",
            "query");
    }

    /// <summary>Every row of the table, in head-dim order.</summary>
    public static IReadOnlyList<AttentionKernelTraits> All => s_table;
}
