// common.cuh — the prelude of every kernel program. It is prepended as text at compile time (NVRTC has no
// include path at run time; nvcc builds use --pre-include), so it includes no header: fp16/bf16 conversions,
// mma.sync, ldmatrix, cp.async and warp reductions are small inline-PTX helpers. Needs sm_80 or newer.
//
// Element type of a specialisation: -DFA_DTYPE=0 (fp32), 1 (fp16), 2 (bf16). It defines fa_elem, the
// conversions fa_to_float / fa_from_float, and FA_NAME(base), which appends the type suffix to a kernel name
// (FA_NAME(fa_fill) -> fa_fill_f16), so kernel names say what they are.

#define FA_DEVICE static __device__ __forceinline__

typedef unsigned short fa_u16;
typedef unsigned int fa_u32;
typedef unsigned long long fa_u64;
typedef long long fa_i64;

// 16-bit floating-point storage: bit patterns only, arithmetic happens in fp32.
struct alignas(2) fa_half { fa_u16 bits; };
struct alignas(2) fa_bf16 { fa_u16 bits; };

// ---- bit casts and fp32 helpers -------------------------------------------------------------------------

FA_DEVICE float fa_bits_to_float(fa_u32 bits) { float f; asm("mov.b32 %0, %1;" : "=f"(f) : "r"(bits)); return f; }
FA_DEVICE fa_u32 fa_float_to_bits(float f) { fa_u32 bits; asm("mov.b32 %0, %1;" : "=r"(bits) : "f"(f)); return bits; }
FA_DEVICE float fa_max(float a, float b) { float r; asm("max.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
// 2^x (MUFU.EX2, flush-to-zero); softmax in base 2 folds log2(e) into the scale.
FA_DEVICE float fa_exp2(float x) { float r; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }

// ---- fp16 / bf16 conversions (round to nearest even) ----------------------------------------------------

FA_DEVICE float fa_half_to_float(fa_half h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits)); return f; }
FA_DEVICE fa_half fa_float_to_half(float f) { fa_half h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f)); return h; }
FA_DEVICE float fa_bf16_to_float(fa_bf16 b) { return fa_bits_to_float(((fa_u32)b.bits) << 16); }
FA_DEVICE fa_bf16 fa_float_to_bf16(float f) { fa_bf16 b; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b.bits) : "f"(f)); return b; }

// Two floats packed into one 32-bit register (lo in bits 0-15), the operand format of mma.sync.
FA_DEVICE fa_u32 fa_pack_half2(float lo, float hi) { fa_u32 r; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r; }
FA_DEVICE fa_u32 fa_pack_bf16x2(float lo, float hi) { fa_u32 r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r; }
FA_DEVICE void fa_unpack_half2(fa_u32 v, float& lo, float& hi)
{
    fa_half l, h;
    asm("mov.b32 {%0, %1}, %2;" : "=h"(l.bits), "=h"(h.bits) : "r"(v));
    lo = fa_half_to_float(l);
    hi = fa_half_to_float(h);
}
FA_DEVICE void fa_unpack_bf16x2(fa_u32 v, float& lo, float& hi)
{
    lo = fa_bits_to_float(v << 16);
    hi = fa_bits_to_float(v & 0xFFFF0000u);
}

// ---- shared memory addresses, cp.async (global -> shared, 16 bytes, L2 only) ----------------------------

FA_DEVICE fa_u32 fa_smem_addr(const void* p)
{
    fa_u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
FA_DEVICE void fa_cp_async_16(fa_u32 smem, const void* gmem)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(smem), "l"(gmem) : "memory");
}
// Copies 16 bytes when valid, else writes 16 zero bytes (tails of tiles); gmem must still be a mapped address.
FA_DEVICE void fa_cp_async_16_zfill(fa_u32 smem, const void* gmem, bool valid)
{
    int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(smem), "l"(gmem), "r"(bytes) : "memory");
}
FA_DEVICE void fa_cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N committed groups are still in flight.
template <int N> FA_DEVICE void fa_cp_async_wait() { asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory"); }

// ---- ldmatrix (shared -> registers, 8x8 tiles of 16-bit elements) ---------------------------------------
// Lanes 8i..8i+7 give the row addresses of tile i; register i of a lane holds tile i's
// row lane/4, columns 2*(lane%4) and +1 (.trans: the transposed tile).

FA_DEVICE void fa_ldmatrix_x4(fa_u32 (&r)[4], fa_u32 addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}
FA_DEVICE void fa_ldmatrix_x4_trans(fa_u32 (&r)[4], fa_u32 addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}
FA_DEVICE void fa_ldmatrix_x2(fa_u32 (&r)[2], fa_u32 addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(addr) : "memory");
}
FA_DEVICE void fa_ldmatrix_x2_trans(fa_u32 (&r)[2], fa_u32 addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(addr) : "memory");
}

// ---- mma.sync m16n8k16, fp32 accumulate: acc[16x8] += A[16x16] (row) * B[16x8] (col) ---------------------
// With g = lane/4, t = lane%4: a = {A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]},
// b = {B[2t..][g], B[2t+8..][g]}, acc = {C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]}.

FA_DEVICE void fa_mma_m16n8k16_f16(float (&acc)[4], const fa_u32 (&a)[4], const fa_u32 (&b)[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
FA_DEVICE void fa_mma_m16n8k16_bf16(float (&acc)[4], const fa_u32 (&a)[4], const fa_u32 (&b)[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// ---- warp reductions (butterfly shuffles over all 32 lanes, or over groups of WIDTH lanes) ----------------

FA_DEVICE float fa_shfl_xor(float v, int lane_mask)
{
    float r;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(v), "r"(lane_mask));
    return r;
}
template <int WIDTH> FA_DEVICE float fa_group_sum(float v)
{
#pragma unroll
    for (int m = WIDTH / 2; m > 0; m >>= 1) v += fa_shfl_xor(v, m);
    return v;
}
template <int WIDTH> FA_DEVICE float fa_group_max(float v)
{
#pragma unroll
    for (int m = WIDTH / 2; m > 0; m >>= 1) v = fa_max(v, fa_shfl_xor(v, m));
    return v;
}
FA_DEVICE float fa_warp_sum(float v) { return fa_group_sum<32>(v); }
FA_DEVICE float fa_warp_max(float v) { return fa_group_max<32>(v); }

// ---- element type of the specialisation ------------------------------------------------------------------

#define FA_DTYPE_F32 0
#define FA_DTYPE_F16 1
#define FA_DTYPE_BF16 2
#define FA_CAT2(a, b) a##_##b
#define FA_CAT(a, b) FA_CAT2(a, b)

#if defined(FA_DTYPE)
#if FA_DTYPE == FA_DTYPE_F32
typedef float fa_elem;
#define FA_DTYPE_SUFFIX f32
FA_DEVICE float fa_to_float(float x) { return x; }
FA_DEVICE float fa_from_float(float x) { return x; }
#elif FA_DTYPE == FA_DTYPE_F16
typedef fa_half fa_elem;
#define FA_DTYPE_SUFFIX f16
FA_DEVICE float fa_to_float(fa_half x) { return fa_half_to_float(x); }
FA_DEVICE fa_half fa_from_float(float x) { return fa_float_to_half(x); }
FA_DEVICE fa_u32 fa_pack2(float lo, float hi) { return fa_pack_half2(lo, hi); }
FA_DEVICE void fa_unpack2(fa_u32 v, float& lo, float& hi) { fa_unpack_half2(v, lo, hi); }
FA_DEVICE void fa_mma_m16n8k16(float (&acc)[4], const fa_u32 (&a)[4], const fa_u32 (&b)[2]) { fa_mma_m16n8k16_f16(acc, a, b); }
#elif FA_DTYPE == FA_DTYPE_BF16
typedef fa_bf16 fa_elem;
#define FA_DTYPE_SUFFIX bf16
FA_DEVICE float fa_to_float(fa_bf16 x) { return fa_bf16_to_float(x); }
FA_DEVICE fa_bf16 fa_from_float(float x) { return fa_float_to_bf16(x); }
FA_DEVICE fa_u32 fa_pack2(float lo, float hi) { return fa_pack_bf16x2(lo, hi); }
FA_DEVICE void fa_unpack2(fa_u32 v, float& lo, float& hi) { fa_unpack_bf16x2(v, lo, hi); }
FA_DEVICE void fa_mma_m16n8k16(float (&acc)[4], const fa_u32 (&a)[4], const fa_u32 (&b)[2]) { fa_mma_m16n8k16_bf16(acc, a, b); }
#else
#error "FA_DTYPE must be 0 (fp32), 1 (fp16) or 2 (bf16)"
#endif
#define FA_NAME(base) FA_CAT(base, FA_DTYPE_SUFFIX)

// The packed launch parameters of the attention forward kernels (attention_fwd.cu and attention_fwd_simt.cu), declared
// once here so both read the same struct; mirrored field by field by src/FastAttention/Gpu/AttentionForwardParams.cs
// (a test compiles both forward sources to PTX with -DFA_LAYOUT_CHECK and compares the offsets below with the C#
// struct's). All strides are in elements; every pointer but q/k/v/o may be null. Other programs ignore it.
struct fa_fwd_params
{
    const fa_elem* q;           // [B, Sq, H, D]
    const fa_elem* k;           // [B, Sk, Hkv, D]
    const fa_elem* v;           // [B, Sk, Hkv, D]
    fa_elem* o;                 // [B, Sq, H, D]
    float* lse;                 // [B, H, Sq] natural log, or null
    const int* key_lengths;     // [B] valid keys per sequence, or null (all Sk)
    const int* query_lengths;   // [B] valid queries per sequence, or null (all Sq)
    const int* tile_offsets;    // [mask_heads * m_tiles + 1] CSR row starts into tile_entries, or null (no layout)
    const int* tile_entries;    // (key tile << 1) | partial, ascending per row; tuned kernel only
    const int* block_keep;      // [mask_heads, mask_q_blocks, mask_k_blocks] 0/1, or null (no layout)
    fa_i64 q_sb, q_ss, q_sh, q_sd;
    fa_i64 k_sb, k_ss, k_sh, k_sd;
    fa_i64 v_sb, v_ss, v_sh, v_sd;
    fa_i64 o_sb, o_ss, o_sh, o_sd;
    fa_i64 lse_sb, lse_sh, lse_ss;
    int batch, seq_q, seq_k, heads, kv_heads, head_dim, group;
    int causal, window_left, window_right;
    int mask_heads, mask_block_q, mask_block_k, mask_q_blocks, mask_k_blocks;
    int m_tiles;                // query tiles of the tuned kernel per (b, h) (rows of the tile list per mask head)
    float q_sign;               // sign of the scale (0 for a zero scale): folded into Q
    float factor;               // |scale| * log2(e), or 1 for a zero scale
};

#if defined(FA_LAYOUT_CHECK)
// Byte offset of every field, in declaration order, then the size: the layout test compiles this to PTX and
// compares the initializer with the C# struct's offsets.
#define FA_OFF(f) (fa_u64)&(((fa_fwd_params*)0)->f)
__device__ fa_u64 fa_fwd_params_layout[] = {
    FA_OFF(q), FA_OFF(k), FA_OFF(v), FA_OFF(o), FA_OFF(lse), FA_OFF(key_lengths), FA_OFF(query_lengths),
    FA_OFF(tile_offsets), FA_OFF(tile_entries), FA_OFF(block_keep),
    FA_OFF(q_sb), FA_OFF(q_ss), FA_OFF(q_sh), FA_OFF(q_sd), FA_OFF(k_sb), FA_OFF(k_ss), FA_OFF(k_sh), FA_OFF(k_sd),
    FA_OFF(v_sb), FA_OFF(v_ss), FA_OFF(v_sh), FA_OFF(v_sd), FA_OFF(o_sb), FA_OFF(o_ss), FA_OFF(o_sh), FA_OFF(o_sd),
    FA_OFF(lse_sb), FA_OFF(lse_sh), FA_OFF(lse_ss),
    FA_OFF(batch), FA_OFF(seq_q), FA_OFF(seq_k), FA_OFF(heads), FA_OFF(kv_heads), FA_OFF(head_dim), FA_OFF(group),
    FA_OFF(causal), FA_OFF(window_left), FA_OFF(window_right),
    FA_OFF(mask_heads), FA_OFF(mask_block_q), FA_OFF(mask_block_k), FA_OFF(mask_q_blocks), FA_OFF(mask_k_blocks),
    FA_OFF(m_tiles), FA_OFF(q_sign), FA_OFF(factor),
    sizeof(fa_fwd_params),
};
#endif
#endif
