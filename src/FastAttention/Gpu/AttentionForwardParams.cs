// The packed launch parameters of the attention forward kernels: the C# mirror of fa_fwd_params, declared once in
// the kernel prelude native/kernels/common.cuh for attention_fwd.cu and attention_fwd_simt.cu (same fields, same
// order, same offsets).
using System.Runtime.InteropServices;

namespace FastAttention.Gpu;

/// <summary>
/// Kernel parameters passed by value as the single argument of every <c>fa_fwd_*</c> kernel. Pointers first,
/// then 64-bit element strides, then 32-bit fields, so the natural (sequential) layout equals the C layout; a
/// test compiles each kernel source to PTX with <c>FA_LAYOUT_CHECK</c> and compares its offset table with <see cref="Layout"/>.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AttentionForwardParams
{
    public nint Q, K, V, O, Lse;
    public nint KeyLengths, QueryLengths, TileOffsets, TileEntries, BlockKeep;
    public long QStrideB, QStrideS, QStrideH, QStrideD;
    public long KStrideB, KStrideS, KStrideH, KStrideD;
    public long VStrideB, VStrideS, VStrideH, VStrideD;
    public long OStrideB, OStrideS, OStrideH, OStrideD;
    public long LseStrideB, LseStrideH, LseStrideS;
    public int Batch, SeqQ, SeqK, Heads, KvHeads, HeadDim, Group;
    public int Causal, WindowLeft, WindowRight;
    public int MaskHeads, MaskBlockQ, MaskBlockK, MaskQueryBlocks, MaskKeyBlocks;
    public int QueryTiles;
    public float QuerySign, Factor;

    /// <summary>The C field name of each C# field, in declaration order (for the layout test).</summary>
    internal static readonly (string CName, string Field)[] CFields =
    [
        ("q", nameof(Q)), ("k", nameof(K)), ("v", nameof(V)), ("o", nameof(O)), ("lse", nameof(Lse)),
        ("key_lengths", nameof(KeyLengths)), ("query_lengths", nameof(QueryLengths)), ("tile_offsets", nameof(TileOffsets)),
        ("tile_entries", nameof(TileEntries)), ("block_keep", nameof(BlockKeep)),
        ("q_sb", nameof(QStrideB)), ("q_ss", nameof(QStrideS)), ("q_sh", nameof(QStrideH)), ("q_sd", nameof(QStrideD)),
        ("k_sb", nameof(KStrideB)), ("k_ss", nameof(KStrideS)), ("k_sh", nameof(KStrideH)), ("k_sd", nameof(KStrideD)),
        ("v_sb", nameof(VStrideB)), ("v_ss", nameof(VStrideS)), ("v_sh", nameof(VStrideH)), ("v_sd", nameof(VStrideD)),
        ("o_sb", nameof(OStrideB)), ("o_ss", nameof(OStrideS)), ("o_sh", nameof(OStrideH)), ("o_sd", nameof(OStrideD)),
        ("lse_sb", nameof(LseStrideB)), ("lse_sh", nameof(LseStrideH)), ("lse_ss", nameof(LseStrideS)),
        ("batch", nameof(Batch)), ("seq_q", nameof(SeqQ)), ("seq_k", nameof(SeqK)), ("heads", nameof(Heads)),
        ("kv_heads", nameof(KvHeads)), ("head_dim", nameof(HeadDim)), ("group", nameof(Group)),
        ("causal", nameof(Causal)), ("window_left", nameof(WindowLeft)), ("window_right", nameof(WindowRight)),
        ("mask_heads", nameof(MaskHeads)), ("mask_block_q", nameof(MaskBlockQ)), ("mask_block_k", nameof(MaskBlockK)),
        ("mask_q_blocks", nameof(MaskQueryBlocks)), ("mask_k_blocks", nameof(MaskKeyBlocks)),
        ("m_tiles", nameof(QueryTiles)), ("q_sign", nameof(QuerySign)), ("factor", nameof(Factor)),
    ];

    /// <summary>The byte offset of every field in declaration order, then the struct size (what the kernel sources list under FA_LAYOUT_CHECK).</summary>
    internal static long[] Layout() =>
        [.. CFields.Select(f => (long)Marshal.OffsetOf<AttentionForwardParams>(f.Field)), Marshal.SizeOf<AttentionForwardParams>()];
}
