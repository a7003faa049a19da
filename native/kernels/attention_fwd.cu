// attention_fwd.cu — the tuned flash-style attention forward for fp16/bf16 (FlashAttention-2's structure, written
// for this project): one pass over the keys with an online softmax, tensor cores through mma.sync.m16n8k16 with
// fp32 accumulation, K/V tiles double-buffered in shared memory by 16-byte cp.async, ldmatrix (.trans for V) from an
// XOR-swizzled shared layout, P kept in registers as the A operand of P·V, softmax in base 2 with |scale|·log2(e)
// folded into one factor. native/kernels/README.md describes the structure for readers of Nsight output.
//
// Specialisation (-D): FA_DTYPE (1 fp16, 2 bf16), FA_HEAD_DIM (32, 64, 80, 96, 128, 256), FA_WARPS (warps per block,
// 16 query rows each), FA_BLOCK_N (keys per K/V tile, a multiple of 16); the values come from
// src/FastAttention/Gpu/AttentionKernelTraits.cs. One program defines three kernels:
//   fa_fwd_hd<D>_<type>          key/query lengths only (the planner guarantees no causal, window or layout)
//   fa_fwd_hd<D>_<type>_causal   causal and/or sliding window (+ lengths)
//   fa_fwd_hd<D>_<type>_sparse   block-sparse tile list (+ any of the above)
// Launch: grid (ceil(Sq / BM), H, B), block 32 * FA_WARPS threads, dynamic shared memory
// (BM + 4 * FA_BLOCK_N) * DP * 2 bytes (AttentionKernelTraits.SharedMemoryBytes). Needs sm_80 or newer.
//
// Layouts must allow 16-byte accesses (the planner falls back to attention_fwd_simt.cu otherwise): head-dim stride 1,
// other strides multiples of 8 elements, base addresses 16-byte aligned.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"; g = lane / 4, t = lane % 4):
//   A (16x16, row):  reg0 = A[g][2t, 2t+1], reg1 = A[g+8][2t, 2t+1], reg2 = A[g][2t+8, 2t+9], reg3 = A[g+8][2t+8, 2t+9]
//   B (16x8, col):   reg0 = B[2t, 2t+1][g], reg1 = B[2t+8, 2t+9][g]  (pairs run along k)
//   C (16x8, fp32):  c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1]
//   (lower column in the low 16 bits of a register.) ldmatrix (PTX ISA, "Warp-level matrix load instruction:
//   ldmatrix"): lanes 8i..8i+7 give the row addresses of 8x8 matrix i; register i of every lane receives row g,
//   columns 2t, 2t+1 of matrix i (of its transpose with .trans).
//
// S = Q·Kᵀ per warp (16 query rows x BLOCK_N keys): A = Q rows, B[k = d][n = key] = K[key][d], so B's k-pairs are
// consecutive d of one K row: plain ldmatrix of K rows. O += P·V: A = P (the S accumulators: the C layout of two
// adjacent n8 blocks is exactly the A layout of one k16 step), B[k = key][n = d] = V[key][d], whose k-pairs run down
// a V column: ldmatrix.trans of V rows.

#if !defined(FA_DTYPE) || FA_DTYPE == FA_DTYPE_F32
#error "attention_fwd.cu needs a 16-bit element type: -DFA_DTYPE=1 (fp16) or -DFA_DTYPE=2 (bf16)"
#endif
#if !defined(FA_HEAD_DIM) || !defined(FA_WARPS) || !defined(FA_BLOCK_N)
#error "attention_fwd.cu needs -DFA_HEAD_DIM, -DFA_WARPS and -DFA_BLOCK_N (see AttentionKernelTraits)"
#endif

#define FA_D FA_HEAD_DIM
#define FA_BM (16 * FA_WARPS)                  // query rows per block
#define FA_BN FA_BLOCK_N                       // keys per K/V tile
#define FA_THREADS (32 * FA_WARPS)
#define FA_DP (((FA_D) + 63) / 64 * 64)        // shared-memory row length in elements (swizzle needs 8-chunk groups)
#define FA_DCH ((FA_D) / 8)                    // 16-byte chunks of a row that hold data
#define FA_NB ((FA_BN) / 8)                    // n8 blocks of S per warp
#define FA_DB ((FA_D) / 8)                     // n8 blocks of O per warp
static_assert(FA_D % 16 == 0, "head dim must be a multiple of 16");
static_assert(FA_BN % 16 == 0, "BLOCK_N must be a multiple of 16");

#define FA_LN2 0.693147180559945309f
#define FA_NEG_INF fa_bits_to_float(0xff800000u)

// The launch parameters are fa_fwd_params, declared in the prelude (common.cuh) for both forward kernels.

#define FA_MODE_DENSE 0
#define FA_MODE_CAUSAL 1
#define FA_MODE_SPARSE 2

// Shared-memory element offset of row r, 16-byte chunk c (8 elements) of a tile with FA_DP-element rows. The chunk
// index is XORed with r % 8: the 8 rows one ldmatrix 8x8 matrix reads (same logical chunk, 8 consecutive rows)
// land in 8 different 16-byte bank groups (each row starts on a 128-byte boundary since FA_DP is a multiple of 64),
// so ldmatrix is conflict-free; c ^ (r & 7) < FA_DP / 8 because FA_DP / 8 is a multiple of 8.
FA_DEVICE int fa_swz(int r, int c) { return r * FA_DP + ((c ^ (r & 7)) << 3); }

// Copies `rows` rows of FA_D elements (row i at src + i * stride) into a swizzled tile at shared address dst;
// rows >= valid are zero-filled (their source address is clamped to row 0, which exists), so padding keys and
// queries past a sequence's length are never read.
FA_DEVICE void fa_load_tile(fa_u32 dst, const fa_elem* src, fa_i64 stride, int rows, int valid, int tid)
{
    for (int idx = tid; idx < rows * FA_DCH; idx += FA_THREADS)
    {
        const int r = idx / FA_DCH;
        const int c = idx % FA_DCH;
        const bool ok = r < valid;
        const fa_elem* g = src + (ok ? r : 0) * stride + c * 8;
        fa_cp_async_16_zfill(dst + fa_swz(r, c) * 2, g, ok);
    }
}

// Visible key range [lo, hi] of query row i (RowRules.Lo/Hi of the CPU engine). Rows i >= lq see nothing.
template <int MODE>
FA_DEVICE void fa_row_range(const fa_fwd_params& p, int i, int lq, int lk, int& lo, int& hi)
{
    if (i >= lq)
    {
        lo = 1;
        hi = 0;
        return;
    }
    if (MODE == FA_MODE_DENSE)
    {
        lo = 0;
        hi = lk - 1;
        return;
    }
    const fa_i64 diag = (fa_i64)i + lk - lq;
    fa_i64 l = 0;
    if (p.window_left >= 0)
    {
        l = diag - p.window_left;
        l = l < 0 ? 0 : l > lk ? lk : l;
    }
    fa_i64 h = lk - 1;
    if (p.causal && diag < h) h = diag;
    if (p.window_right >= 0 && diag + p.window_right < h) h = diag + p.window_right;
    lo = (int)l;
    hi = (int)(h < -1 ? -1 : h);
}

// The key tiles a block visits, in ascending order: every tile of [nt_lo, nt_hi], or (sparse) the entries of this
// block's row of the tile list that fall in that range. next() returns (tile << 1) | partial, or -1 at the end.
template <int MODE>
struct fa_tile_iter
{
    const int* list;
    int pos, end, nt_lo, nt_hi;

    __device__ __forceinline__ int next()
    {
        if (MODE == FA_MODE_SPARSE)
        {
            while (pos < end)
            {
                const int e = list[pos++];
                const int nt = e >> 1;
                if (nt < nt_lo) continue;
                if (nt > nt_hi) break;
                return e;
            }
            pos = end;
            return -1;
        }
        if (nt_lo > nt_hi) return -1;
        return (nt_lo++) << 1;
    }
};

struct alignas(16) fa_smem_chunk { fa_u32 w[4]; };

template <int MODE>
FA_DEVICE void fa_fwd_body(const fa_fwd_params& p)
{
    extern __shared__ fa_smem_chunk fa_smem_chunks[];  // dynamic shared memory, 16-byte aligned by its type
    unsigned char* fa_smem = (unsigned char*)fa_smem_chunks;
    const int tid = threadIdx.x;
    const int warp = tid >> 5;
    const int lane = tid & 31;
    const int g = lane >> 2;  // fragment row group
    const int t = lane & 3;   // thread in group
    const int mt = blockIdx.x;
    const int h = blockIdx.y;
    const int b = blockIdx.z;
    const int m0 = mt * FA_BM;
    const int lq = p.query_lengths ? p.query_lengths[b] : p.seq_q;
    const int lk = p.key_lengths ? p.key_lengths[b] : p.seq_k;

    // This thread's two fragment rows (g and g + 8 of its warp's 16) and their visible key ranges.
    int row[2], lo[2], hi[2];
    row[0] = m0 + warp * 16 + g;
    row[1] = row[0] + 8;
#pragma unroll
    for (int r = 0; r < 2; r++) fa_row_range<MODE>(p, row[r], lq, lk, lo[r], hi[r]);

    float o_acc[FA_DB][4];
#pragma unroll
    for (int i = 0; i < FA_DB; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) o_acc[i][e] = 0.f;
    float m_run[2] = {FA_NEG_INF, FA_NEG_INF};  // running row max, raw (sign-folded) score units
    float l_run[2] = {0.f, 0.f};                // this thread's share of the running row sum

    if (m0 < lq)
    {
        // Keys any valid row of the block may see: lo and hi are non-decreasing in the row, so the union of the
        // rows' ranges lies in [lo(m0), hi(last valid row)], and every row sees [lo(last), hi(m0)] (when that is
        // not empty): tiles inside it need no per-element mask.
        const int last = (m0 + FA_BM < lq ? m0 + FA_BM : lq) - 1;
        int k_lo, k_hi, lo_last, hi_first;
        fa_row_range<MODE>(p, m0, lq, lk, k_lo, hi_first);
        fa_row_range<MODE>(p, last, lq, lk, lo_last, k_hi);

        fa_tile_iter<MODE> it;
        it.nt_lo = k_lo / FA_BN;
        it.nt_hi = k_hi >= k_lo ? k_hi / FA_BN : -1;
        it.list = p.tile_entries;
        it.pos = 0;
        it.end = 0;
        const int hm = p.mask_heads == 1 ? 0 : h;
        const int* keep_row[2] = {0, 0};
        if (MODE == FA_MODE_SPARSE)
        {
            const int* offsets = p.tile_offsets + (fa_i64)hm * p.m_tiles + mt;
            it.pos = offsets[0];
            it.end = offsets[1];
#pragma unroll
            for (int r = 0; r < 2; r++)
            {
                // Only dereferenced for keys in [lo, hi], which is empty for rows >= lq (and lq <= Sq).
                if (row[r] < lq) keep_row[r] = p.block_keep + ((fa_i64)hm * p.mask_q_blocks + row[r] / p.mask_block_q) * p.mask_k_blocks;
            }
        }

        const int hk = h / p.group;
        const fa_elem* q_g = p.q + b * p.q_sb + h * p.q_sh + (fa_i64)m0 * p.q_ss;
        const fa_elem* k_g = p.k + b * p.k_sb + hk * p.k_sh;
        const fa_elem* v_g = p.v + b * p.v_sb + hk * p.v_sh;
        const fa_u32 smem = fa_smem_addr(fa_smem);
        const fa_u32 s_q = smem;
        const fa_u32 s_k = s_q + FA_BM * FA_DP * 2;        // 2 stages of [FA_BN][FA_DP]
        const fa_u32 s_v = s_k + 2 * FA_BN * FA_DP * 2;    // 2 stages of [FA_BN][FA_DP]

        // Prologue: Q tile and the first K/V tile in one group; then fold the scale's sign into this thread's own Q
        // chunks (negating 16-bit floats flips bit 15 of each half; a zero scale zeroes Q), and publish.
        fa_load_tile(s_q, q_g, p.q_ss, FA_BM, lq - m0, tid);
        int entry = it.next();
        if (entry >= 0)
        {
            const int n0 = (entry >> 1) * FA_BN;
            fa_load_tile(s_k, k_g + (fa_i64)n0 * p.k_ss, p.k_ss, FA_BN, lk - n0, tid);
            fa_load_tile(s_v, v_g + (fa_i64)n0 * p.v_ss, p.v_ss, FA_BN, lk - n0, tid);
        }
        fa_cp_async_commit();
        fa_cp_async_wait<0>();
        if (p.q_sign != 1.f)
        {
            const fa_u32 flip = p.q_sign < 0.f ? 0x80008000u : 0u;
            const fa_u32 keep = p.q_sign < 0.f ? 0xffffffffu : 0u;
            for (int idx = tid; idx < FA_BM * FA_DCH; idx += FA_THREADS)
            {
                fa_u32* chunk = (fa_u32*)(fa_smem + fa_swz(idx / FA_DCH, idx % FA_DCH) * 2);
#pragma unroll
                for (int w = 0; w < 4; w++) chunk[w] = (chunk[w] & keep) ^ flip;
            }
        }
        __syncthreads();

        int stage = 0;
        while (entry >= 0)
        {
            // Queue the next tile into the other stage (last read in the previous iteration, before its barrier).
            const int next = it.next();
            if (next >= 0)
            {
                const int n1 = (next >> 1) * FA_BN;
                const fa_u32 off = (stage ^ 1) * FA_BN * FA_DP * 2;
                fa_load_tile(s_k + off, k_g + (fa_i64)n1 * p.k_ss, p.k_ss, FA_BN, lk - n1, tid);
                fa_load_tile(s_v + off, v_g + (fa_i64)n1 * p.v_ss, p.v_ss, FA_BN, lk - n1, tid);
            }
            fa_cp_async_commit();

            const int n0 = (entry >> 1) * FA_BN;
            const bool partial = MODE == FA_MODE_SPARSE && (entry & 1);
            const fa_u32 k_st = s_k + stage * FA_BN * FA_DP * 2;
            const fa_u32 v_st = s_v + stage * FA_BN * FA_DP * 2;

            // S = Q·Kᵀ for this warp's 16 rows. Q: ldmatrix.x4 matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7),
            // (rows 0-7, k 8-15), (rows 8-15, k 8-15) = A reg0..3; lane l addresses row l % 16, chunk 2kk + l / 16.
            // K: matrices (keys 0-7, k 0-7), (keys 0-7, k 8-15), (keys 8-15, k 0-7), (keys 8-15, k 8-15) = B reg0, reg1
            // of n-block 2j and of n-block 2j + 1; lane l addresses key l % 8 + 8 (l / 16), chunk 2kk + (l / 8) % 2.
            float s[FA_NB][4];
#pragma unroll
            for (int i = 0; i < FA_NB; i++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[i][e] = 0.f;
#pragma unroll
            for (int kk = 0; kk < FA_D / 16; kk++)
            {
                fa_u32 a[4];
                fa_ldmatrix_x4(a, s_q + fa_swz(warp * 16 + (lane & 15), 2 * kk + (lane >> 4)) * 2);
#pragma unroll
                for (int j = 0; j < FA_NB / 2; j++)
                {
                    fa_u32 kb[4];
                    fa_ldmatrix_x4(kb, k_st + fa_swz(16 * j + (lane & 7) + ((lane >> 4) << 3), 2 * kk + ((lane >> 3) & 1)) * 2);
                    const fa_u32 b0[2] = {kb[0], kb[1]};
                    const fa_u32 b1[2] = {kb[2], kb[3]};
                    fa_mma_m16n8k16(s[2 * j], a, b0);
                    fa_mma_m16n8k16(s[2 * j + 1], a, b1);
                }
            }

            // Mask: S element (r, e) is row row[e / 2], key n0 + 8 i + 2t + (e % 2). Tiles inside every row's range
            // and fully kept by the layout skip this.
            const bool need_mask = partial || n0 < lo_last || n0 + FA_BN - 1 > hi_first;
            if (need_mask)
            {
#pragma unroll
                for (int i = 0; i < FA_NB; i++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                    {
                        const int r = e >> 1;
                        const int j = n0 + 8 * i + 2 * t + (e & 1);
                        bool vis = j >= lo[r] && j <= hi[r];
                        if (MODE == FA_MODE_SPARSE && partial && vis) vis = keep_row[r][j / p.mask_block_k] != 0;
                        if (!vis) s[i][e] = FA_NEG_INF;
                    }
            }

            // Online softmax per row (base 2, differences before scaling as the CPU engine): the row max over the
            // 4 lanes of a group (xor 1, 2), rescale of O and of this thread's partial sum, P in place of S.
#pragma unroll
            for (int r = 0; r < 2; r++)
            {
                float mx = FA_NEG_INF;
#pragma unroll
                for (int i = 0; i < FA_NB; i++) mx = fa_max(mx, fa_max(s[i][2 * r], s[i][2 * r + 1]));
                mx = fa_max(mx, fa_shfl_xor(mx, 1));
                mx = fa_max(mx, fa_shfl_xor(mx, 2));
                const float m_new = fa_max(m_run[r], mx);
                const float m_use = m_new == FA_NEG_INF ? 0.f : m_new;  // all masked so far: no (-inf) - (-inf)
                const float alpha = fa_exp2((m_run[r] - m_use) * p.factor);  // 0 while the row had no key
                m_run[r] = m_new;
                l_run[r] *= alpha;
#pragma unroll
                for (int i = 0; i < FA_DB; i++)
                {
                    o_acc[i][2 * r] *= alpha;
                    o_acc[i][2 * r + 1] *= alpha;
                }
#pragma unroll
                for (int i = 0; i < FA_NB; i++)
                {
                    const float p0 = fa_exp2((s[i][2 * r] - m_use) * p.factor);
                    const float p1 = fa_exp2((s[i][2 * r + 1] - m_use) * p.factor);
                    s[i][2 * r] = p0;
                    s[i][2 * r + 1] = p1;
                    l_run[r] += p0 + p1;
                }
            }

            // O += P·V. A (k16 step jj) = S accumulators of n-blocks 2jj and 2jj + 1, rounded to 16 bits:
            // reg0 = rows g, keys 2t..; reg1 = rows g + 8; reg2, reg3 = the same 8 keys later. V: ldmatrix.x4.trans
            // matrices (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15) = B reg0, reg1
            // of d-block 2dd and of d-block 2dd + 1; lane l addresses key l % 16, chunk 2dd + l / 16.
#pragma unroll
            for (int jj = 0; jj < FA_BN / 16; jj++)
            {
                fa_u32 a[4];
                a[0] = fa_pack2(s[2 * jj][0], s[2 * jj][1]);
                a[1] = fa_pack2(s[2 * jj][2], s[2 * jj][3]);
                a[2] = fa_pack2(s[2 * jj + 1][0], s[2 * jj + 1][1]);
                a[3] = fa_pack2(s[2 * jj + 1][2], s[2 * jj + 1][3]);
#pragma unroll
                for (int dd = 0; dd < FA_D / 16; dd++)
                {
                    fa_u32 vb[4];
                    fa_ldmatrix_x4_trans(vb, v_st + fa_swz(16 * jj + (lane & 15), 2 * dd + (lane >> 4)) * 2);
                    const fa_u32 b0[2] = {vb[0], vb[1]};
                    const fa_u32 b1[2] = {vb[2], vb[3]};
                    fa_mma_m16n8k16(o_acc[2 * dd], a, b0);
                    fa_mma_m16n8k16(o_acc[2 * dd + 1], a, b1);
                }
            }

            // The next tile has landed (this thread's copies) and, after the barrier, everyone's; every warp is also
            // done reading this stage, which the iteration after next overwrites.
            fa_cp_async_wait<0>();
            __syncthreads();
            entry = next;
            stage ^= 1;
        }
    }

    // Epilogue: full row sums over the group's 4 lanes, O / l rounded to the element type (pairs of columns 2t, 2t+1
    // as one 32-bit store), natural-log LSE. Rows that saw no key, and padding rows >= lq, write zeros and -inf.
#pragma unroll
    for (int r = 0; r < 2; r++)
    {
        float l_sum = l_run[r];
        l_sum += fa_shfl_xor(l_sum, 1);
        l_sum += fa_shfl_xor(l_sum, 2);
        const int i = row[r];
        if (i >= p.seq_q) continue;
        const bool seen = i < lq && l_sum > 0.f;
        const float inv = seen ? 1.f / l_sum : 0.f;
        fa_elem* dst = p.o + b * p.o_sb + h * p.o_sh + (fa_i64)i * p.o_ss;
#pragma unroll
        for (int d = 0; d < FA_DB; d++)
        {
            const float x0 = seen ? o_acc[d][2 * r] * inv : 0.f;
            const float x1 = seen ? o_acc[d][2 * r + 1] * inv : 0.f;
            *(fa_u32*)(dst + 8 * d + 2 * t) = fa_pack2(x0, x1);
        }
        if (p.lse && t == 0)
        {
            p.lse[b * p.lse_sb + h * p.lse_sh + (fa_i64)i * p.lse_ss] = seen ? (m_run[r] * p.factor + log2f(l_sum)) * FA_LN2 : FA_NEG_INF;
        }
    }
}

#define FA_FWD_NAME3(d, t, s) fa_fwd_hd##d##_##t##s
#define FA_FWD_NAME2(d, t, s) FA_FWD_NAME3(d, t, s)
#define FA_FWD_NAME(s) FA_FWD_NAME2(FA_HEAD_DIM, FA_DTYPE_SUFFIX, s)

extern "C" __global__ void __launch_bounds__(FA_THREADS, 1) FA_FWD_NAME()(const fa_fwd_params p)
{
    fa_fwd_body<FA_MODE_DENSE>(p);
}

extern "C" __global__ void __launch_bounds__(FA_THREADS, 1) FA_FWD_NAME(_causal)(const fa_fwd_params p)
{
    fa_fwd_body<FA_MODE_CAUSAL>(p);
}

extern "C" __global__ void __launch_bounds__(FA_THREADS, 1) FA_FWD_NAME(_sparse)(const fa_fwd_params p)
{
    fa_fwd_body<FA_MODE_SPARSE>(p);
}
