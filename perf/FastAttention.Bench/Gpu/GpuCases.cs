// The GPU benchmark's shapes, FLOP and byte counts, case names (shared with the PyTorch peers in perf/peers so rows
// join by name) and the peak-HBM figure. Pure: unit-tested without a GPU.
using System.Globalization;

namespace FastAttention.Bench.Gpu;

/// <summary>One attention forward shape: Q/K/V/O <c>[B, S, H, D]</c>.</summary>
internal sealed record GpuForwardCase(string Dtype, int Batch, int Seq, int Heads, int HeadDim, bool Causal)
{
    /// <summary>"fwd fp16 D=128 S=4096 B=4 H=16 causal": the name the peer writes for the same shape.</summary>
    public string Name => $"fwd {Dtype} D={HeadDim} S={Seq} B={Batch} H={Heads}{(Causal ? " causal" : "")}";

    /// <summary>FlashAttention's count: 4·B·H·S²·D, halved for causal.</summary>
    public double Flops => 4.0 * Batch * Heads * (double)Seq * Seq * HeadDim * (Causal ? 0.5 : 1.0);
}

/// <summary>Block-sparse forward vs its dense baseline (the same shape without the block mask).</summary>
internal sealed record GpuSparseCase(string Dtype, int Batch, int Seq, int Heads, int HeadDim, int BlockSize, int BlocksPerRow)
{
    public int KeyBlocks => (Seq + BlockSize - 1) / BlockSize;

    public double Density => (double)BlocksPerRow / KeyBlocks;

    public string Name => $"sparse {Dtype} D={HeadDim} S={Seq} B={Batch} H={Heads} density={Density.ToString("0.###", CultureInfo.InvariantCulture)}";

    /// <summary>Every <see cref="Stride"/>-th key block counted from the diagonal: exactly <see cref="BlocksPerRow"/> per query block.</summary>
    public int Stride => KeyBlocks / BlocksPerRow;

    /// <summary>The layout: <see cref="BlockSparseMask.Strided"/> with no local band, so every row keeps the same number of blocks.</summary>
    public BlockSparseMask Mask() => BlockSparseMask.Strided(Seq, Seq, BlockSize, BlockSize, 0, 0, Stride);

    /// <summary>The dense forward of the same shape (its row is in the forward section).</summary>
    public GpuForwardCase Dense => new(Dtype, Batch, Seq, Heads, HeadDim, false);
}

/// <summary>A softmax over <c>[B, H, Sq, Sk]</c> scores: bandwidth-bound, one read and one write.</summary>
internal sealed record GpuSoftmaxCase(string Dtype, int Batch, int Heads, int SeqQ, int SeqK, int ElementSize)
{
    public string Name => $"softmax {Dtype} B={Batch} H={Heads} Sq={SeqQ} Sk={SeqK}";

    public double Bytes => 2.0 * Batch * Heads * (double)SeqQ * SeqK * ElementSize;
}

/// <summary>Paged decode: one query token per sequence over a paged fp16 cache (the issue-6 shapes).</summary>
internal sealed record GpuDecodeCase(int Batch, int Context, int Heads, int KvHeads, int HeadDim, int PageSize)
{
    public string Name => $"decode fp16 D={HeadDim} H={Heads} Hkv={KvHeads} page={PageSize} B={Batch} ctx={Context}";

    /// <summary>K and V bytes read once: 2 · B · ctx · Hkv · D · 2 bytes.</summary>
    public double Bytes => 2.0 * Batch * (double)Context * KvHeads * HeadDim * 2;
}

/// <summary>The case lists of <c>gpu</c> (full and <c>--quick</c>).</summary>
internal static class GpuCases
{
    /// <summary>Tokens per forward call (batch · seq), FlashAttention's benchmark setting.</summary>
    public const int Tokens = 16384;

    /// <summary>Model width (heads · head dim): 16 heads of 128 or 32 heads of 64.</summary>
    public const int Hidden = 2048;

    /// <summary>Longest sequence the plain SIMT kernel is timed at (it is a correctness reference, and slow).</summary>
    public const int PlainMaxSeq = 2048;

    public static IReadOnlyList<int> ForwardSeqs(bool quick) => quick ? [1024, 4096, 16384] : [512, 1024, 2048, 4096, 8192, 16384];

    public static IReadOnlyList<string> Dtypes(bool quick) => quick ? ["fp16"] : ["fp16", "bf16"];

    /// <summary>Forward shapes: fp16/bf16 x D 64/128 x S x causal, B = 16384 / S, H = 2048 / D.</summary>
    public static IReadOnlyList<GpuForwardCase> Forward(bool quick) =>
        [.. from dtype in Dtypes(quick)
            from d in new[] { 64, 128 }
            from s in ForwardSeqs(quick)
            from causal in new[] { false, true }
            select new GpuForwardCase(dtype, Tokens / s, s, Hidden / d, d, causal)];

    /// <summary>Block-sparse at S = 8192, D = 128: 128 x 128 blocks, 8 of 64 key blocks per row (12.5%, strided).</summary>
    public static IReadOnlyList<GpuSparseCase> Sparse(bool quick) =>
        [.. Dtypes(quick).Select(dtype => new GpuSparseCase(dtype, Tokens / 8192, 8192, Hidden / 128, 128, 128, 8))];

    /// <summary>Softmax rows of 128 .. 16384 keys, 64 Mi elements per call.</summary>
    public static IReadOnlyList<GpuSoftmaxCase> Softmax(bool quick)
    {
        var result = new List<GpuSoftmaxCase>();
        foreach (var (dtype, size) in quick ? new[] { ("fp16", 2) } : new[] { ("fp16", 2), ("fp32", 4) })
        {
            foreach (int sk in quick ? new[] { 1024, 16384 } : new[] { 128, 1024, 4096, 16384 })
            {
                int rows = (64 << 20) / sk;
                result.Add(new GpuSoftmaxCase(dtype, 4, 16, rows / 64, sk, size));
            }
        }
        return result;
    }

    /// <summary>The issue-6 decode shapes: fp16, D = 128, 32 query heads on 8 KV heads, 16-token pages.</summary>
    public static IReadOnlyList<GpuDecodeCase> Decode(bool quick) =>
        [.. (quick ? new[] { (1, 65536), (64, 1024) } : new[] { (1, 65536), (64, 1024), (64, 4096), (256, 2048) })
            .Select(bc => new GpuDecodeCase(bc.Item1, bc.Item2, 32, 8, 128, 16))];

    /// <summary>
    /// Theoretical DRAM bandwidth in GB/s: from the driver's memory clock and bus width (<c>2 · clock · width / 8</c>,
    /// double data rate) when both are reported, else from <see cref="PeakHbmTable"/> by device name, else null.
    /// </summary>
    public static (double? Gbs, string Source) PeakHbm(string deviceName, int memoryClockKHz, int busWidthBits)
    {
        if (memoryClockKHz > 0 && busWidthBits > 0)
        {
            double gbs = 2.0 * memoryClockKHz * 1e3 * busWidthBits / 8 / 1e9;
            return (gbs, $"driver: {memoryClockKHz / 1000} MHz x {busWidthBits} bit x 2");
        }
        foreach (var (pattern, gbs) in PeakHbmTable)
        {
            if (deviceName.Contains(pattern, StringComparison.OrdinalIgnoreCase)) return (gbs, $"table: '{pattern}'");
        }
        return (null, "unknown (driver reports no memory clock; device not in the table)");
    }

    /// <summary>Datasheet DRAM bandwidth (GB/s) by a substring of the device name; first match wins.</summary>
    public static readonly (string Pattern, double Gbs)[] PeakHbmTable =
    [
        ("H200", 4800),
        ("H100 PCIe", 2000),
        ("H100 NVL", 3900),
        ("H100", 3350),        // SXM5 80 GB HBM3
        ("A100-SXM4-80GB", 2039),
        ("A100 80GB PCIe", 1935),
        ("A100", 1555),        // 40 GB
        ("L40S", 864),
        ("RTX 4090", 1008),
    ];
}
