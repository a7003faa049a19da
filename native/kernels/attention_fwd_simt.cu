// attention_fwd_simt.cu — the plain attention forward: simple indexing, no tensor cores, fp32 arithmetic, every
// element type (-DFA_DTYPE=0/1/2; it is the fp32 path) and every mask feature. It is the version checked against
// the CPU engine first on a GPU, and the fallback for layouts the tuned kernel (attention_fwd.cu) cannot take
// (a head-dim stride other than 1, strides or base addresses not 16-byte aligned).
//
// One warp per query row, FA_SIMT_WARPS rows per block; grid (ceil(Sq / FA_SIMT_WARPS), H, B). The row's Q
// (times the sign of the scale) sits in shared memory; the warp walks the row's visible key range 32 keys at a
// time, lane l scoring key j0 + l, then takes one online-softmax step (running max in raw score units,
// p = 2^((s - max) * |scale| * log2 e), as the CPU engine's LogitScale) and accumulates P·V with lane l owning
// head-dim elements l, l + 32, ... Keys outside the row's range are never read; masked keys inside a block-sparse
// layout are skipped per element. Head dim is a run-time value up to FA_SIMT_MAX_D.

#if !defined(FA_DTYPE)
#error "attention_fwd_simt.cu needs -DFA_DTYPE=0 (fp32), 1 (fp16) or 2 (bf16)"
#endif

#define FA_SIMT_WARPS 4
#define FA_SIMT_MAX_D 256
#define FA_SIMT_D_PER_LANE (FA_SIMT_MAX_D / 32)

// The launch parameters are fa_fwd_params, declared in the prelude (common.cuh) for both forward kernels.

#define FA_LN2 0.693147180559945309f
#define FA_NEG_INF fa_bits_to_float(0xff800000u)

FA_DEVICE float fa_simt_shfl_idx(float v, int src_lane)
{
    float r;
    asm volatile("shfl.sync.idx.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(v), "r"(src_lane));
    return r;
}

// The visible key range [lo, hi] of query row i (as RowRules.Lo/Hi of the CPU engine), for lengths lq, lk.
FA_DEVICE int fa_simt_row_lo(const fa_fwd_params& p, int i, int lq, int lk)
{
    if (p.window_left < 0) return 0;
    fa_i64 lo = (fa_i64)i + lk - lq - p.window_left;
    return (int)(lo < 0 ? 0 : lo > lk ? lk : lo);
}
FA_DEVICE int fa_simt_row_hi(const fa_fwd_params& p, int i, int lq, int lk)
{
    fa_i64 diag = (fa_i64)i + lk - lq;
    fa_i64 hi = lk - 1;
    if (p.causal && diag < hi) hi = diag;
    if (p.window_right >= 0 && diag + p.window_right < hi) hi = diag + p.window_right;
    return (int)(hi < -1 ? -1 : hi);
}

extern "C" __global__ void __launch_bounds__(FA_SIMT_WARPS * 32) FA_NAME(fa_fwd_simt)(const fa_fwd_params p)
{
    __shared__ float q_rows[FA_SIMT_WARPS][FA_SIMT_MAX_D];
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int i = blockIdx.x * FA_SIMT_WARPS + warp;  // query row
    const int h = blockIdx.y;
    const int b = blockIdx.z;
    if (i >= p.seq_q) return;  // whole warps only; nothing below synchronises the block
    const int D = p.head_dim;
    const int lq = p.query_lengths ? p.query_lengths[b] : p.seq_q;
    const int lk = p.key_lengths ? p.key_lengths[b] : p.seq_k;

    float* q_row = q_rows[warp];
    const fa_elem* q_g = p.q + b * p.q_sb + (fa_i64)i * p.q_ss + h * p.q_sh;
    for (int d = lane; d < D; d += 32) q_row[d] = p.q_sign * fa_to_float(q_g[d * p.q_sd]);
    __syncwarp();

    float m = FA_NEG_INF;  // running max of the raw (sign-folded) scores
    float l = 0.f;         // running sum of 2^((s - m) * factor)
    float acc[FA_SIMT_D_PER_LANE];
#pragma unroll
    for (int t = 0; t < FA_SIMT_D_PER_LANE; t++) acc[t] = 0.f;

    if (i < lq)
    {
        const int lo = fa_simt_row_lo(p, i, lq, lk);
        const int hi = fa_simt_row_hi(p, i, lq, lk);
        const int hk = h / p.group;
        const fa_elem* k_g = p.k + b * p.k_sb + hk * p.k_sh;
        const fa_elem* v_g = p.v + b * p.v_sb + hk * p.v_sh;
        const int* keep_row = 0;  // block flags of this row's query block, [mask_k_blocks]
        if (p.block_keep)
        {
            const int hm = p.mask_heads == 1 ? 0 : h;
            keep_row = p.block_keep + ((fa_i64)hm * p.mask_q_blocks + i / p.mask_block_q) * p.mask_k_blocks;
        }
        for (int j0 = lo; j0 <= hi; j0 += 32)
        {
            const int j = j0 + lane;
            const bool valid = j <= hi && (keep_row == 0 || keep_row[j / p.mask_block_k] != 0);
            float s = FA_NEG_INF;
            if (valid)
            {
                const fa_elem* k_row = k_g + (fa_i64)j * p.k_ss;
                float dot = 0.f;
                for (int d = 0; d < D; d++) dot += q_row[d] * fa_to_float(k_row[d * p.k_sd]);
                s = dot;
            }
            const float tile_max = fa_warp_max(s);
            if (tile_max == FA_NEG_INF) continue;  // the same on every lane: no visible key among these 32
            const float m_new = fa_max(m, tile_max);
            const float alpha = fa_exp2((m - m_new) * p.factor);  // 0 while m is -inf
            const float pj_own = valid ? fa_exp2((s - m_new) * p.factor) : 0.f;
            l = l * alpha + fa_warp_sum(pj_own);
            m = m_new;
#pragma unroll
            for (int t = 0; t < FA_SIMT_D_PER_LANE; t++) acc[t] *= alpha;
            const int count = hi - j0 + 1 < 32 ? hi - j0 + 1 : 32;
            for (int jj = 0; jj < count; jj++)
            {
                const float pj = fa_simt_shfl_idx(pj_own, jj);
                if (pj == 0.f) continue;  // masked (or underflowed): its V row is not read
                const fa_elem* v_row = v_g + (fa_i64)(j0 + jj) * p.v_ss;
#pragma unroll
                for (int t = 0; t < FA_SIMT_D_PER_LANE; t++)
                {
                    const int d = lane + 32 * t;
                    if (d < D) acc[t] += pj * fa_to_float(v_row[d * p.v_sd]);
                }
            }
        }
    }

    // Rows that saw no key (and padding rows i >= lq) write zeros and LSE = -inf.
    const float inv = l > 0.f ? 1.f / l : 0.f;
    fa_elem* o_g = p.o + b * p.o_sb + (fa_i64)i * p.o_ss + h * p.o_sh;
#pragma unroll
    for (int t = 0; t < FA_SIMT_D_PER_LANE; t++)
    {
        const int d = lane + 32 * t;
        if (d < D) o_g[d * p.o_sd] = fa_from_float(acc[t] * inv);
    }
    if (p.lse && lane == 0)
    {
        p.lse[b * p.lse_sb + h * p.lse_sh + (fa_i64)i * p.lse_ss] = l > 0.f ? (m * p.factor + log2f(l)) * FA_LN2 : FA_NEG_INF;
    }
}
