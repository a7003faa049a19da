// paged_decode.cu — split-KV decode attention (flash-decoding) over a KV cache read through block tables, and the
// combine kernel that merges the splits by log-sum-exp. Specialised by -DFA_DTYPE=0/1/2 and -DFA_HEAD_DIM=64/128/256.
//
// Semantics (as CpuAttention.Decode): batch entry b has len = seq_lens[b] cached tokens and q_len query rows, the
// last q_len positions (bottom-right: off = len - q_len). Query row i of head h (KV head h / group) sees key j when
// j < len, and j <= i + off if causal, and j >= i + off - window_left if window_left >= 0, and
// j <= i + off + window_right if window_right >= 0. A row that sees no key gives zeros and LSE = -inf.
// Logits: scale * q.k, or softcap * tanh(scale * q.k / softcap) when softcap > 0; softmax in base 2 (log2(e)
// folded into the factor), fp32 accumulation, LSE returned in natural log.
//
// Key/value row of KV head h, page p, slot s starts at element h * kv_head_stride + p * page_stride + s * D
// (64-bit); position j of batch entry b lives in page block_tables[b][j >> page_shift], slot j & (pageSize - 1).
//
// Two decode kernels write the same results, selected by the host (DESIGN.md section 3):
//  * fa_paged_decode_simt_hd<D>_<t>: the plain version. One block per (query head, batch entry, split); for each
//    query row it walks the keys one at a time with a block-wide dot product. Obviously right, slow.
//  * fa_paged_decode_hd<D>_<t>: the tuned version. One block per (KV head, batch entry, split x row chunk) holds up
//    to 8 query rows that share the KV head, so each K/V row is read once for all of them.
//    - fp16/bf16: tensor cores (mma.m16n8k16, the 8 rows padded to 16) over 64-key K/V tiles that a ring of 3
//      shared-memory stages (2 for D = 256) keeps in flight through 16-byte cp.async; each of the 4 warps owns 16 keys
//      of a tile and its own online softmax; page ids are read a tile ahead. Needs dynamic shared memory
//      (FA_SMEM_BYTES: 48.5 KiB for D = 64, 96.5 KiB for 128, 128.5 KiB for 256).
//    - fp32: a vectorised SIMT kernel (mma would round fp32 to tf32). A "key group" of LANES = min(32, D/4) lanes
//      covers one key row with 16-byte loads; each group takes 4 consecutive keys per step and issues all 8 (K and
//      V) row loads before using any. Each group keeps its own online-softmax state; groups are merged at the end.
// Splits: with num_splits > 1 a block covers keys [split * keys_per_split, (split + 1) * keys_per_split) and writes
// a normalised fp32 partial output + base-2 LSE per row; fa_decode_combine then weighs split s by
// exp2(lse_s - max lse) and writes O (element type) and the natural LSE. With one split the decode kernel writes
// O and LSE directly.

#if !defined(FA_DTYPE) || !defined(FA_HEAD_DIM)
#error "paged_decode.cu needs -DFA_DTYPE=0/1/2 and -DFA_HEAD_DIM=64/128/256"
#endif
#if FA_HEAD_DIM != 64 && FA_HEAD_DIM != 128 && FA_HEAD_DIM != 256
#error "FA_HEAD_DIM must be 64, 128 or 256"
#endif

#define FA_D FA_HEAD_DIM
#define FA_VEC (16 / (int)sizeof(fa_elem))                      // elements per 16-byte load
#define FA_LANES (FA_D / FA_VEC < 32 ? FA_D / FA_VEC : 32)      // lanes per key row (a key group)
#define FA_EPL (FA_D / FA_LANES)                                 // elements of a row per lane
#define FA_VPL (FA_EPL / FA_VEC)                                 // 16-byte loads of a row per lane
#define FA_GPW (32 / FA_LANES)                                   // key groups per warp
#define FA_WARPS 4
#define FA_THREADS (FA_WARPS * 32)
#define FA_GROUPS (FA_WARPS * FA_GPW)                            // key groups per block
#define FA_ROWS 8                                                // query rows per block (tuned kernel)
#define FA_KPS 4                                                 // keys per key group per step
#define FA_NEG_INF (-__int_as_float(0x7f800000))
#define FA_LN2 0.693147180559945309f
#define FA_LOG2E 1.44269504088896341f

#define FA_HD_NAME1(base, d) base##d
#define FA_HD_NAME(base, d) FA_HD_NAME1(base, d)
#define FA_KERNEL(base) FA_NAME(FA_HD_NAME(base, FA_HEAD_DIM))

struct alignas(16) fa_vec16 { fa_u32 x, y, z, w; };

// Mirrors FastAttention.Gpu.DecodeParams (C# sequential layout: pointers, then 64-bit, then 32-bit fields).
struct fa_decode_params
{
    const fa_elem* q;          // [B, q_len, H, D], D contiguous, rows 16-byte aligned
    const fa_elem* k_pool;     // key rows (layout above)
    const fa_elem* v_pool;     // value rows
    const int* block_tables;   // [B, table_stride] page ids
    const int* seq_lens;       // [B] cached tokens per batch entry
    fa_elem* o;                // [B, q_len, H, D], D contiguous
    float* lse;                // [B, H, q_len] natural log, or null
    float* part_o;             // [B, H, q_len, num_splits, D] normalised partial outputs (num_splits > 1)
    float* part_lse;           // [B, H, q_len, num_splits] base-2 LSE of each partial (num_splits > 1)
    fa_i64 q_stride_b, q_stride_s, q_stride_h;
    fa_i64 o_stride_b, o_stride_s, o_stride_h;
    fa_i64 lse_stride_b, lse_stride_h, lse_stride_s;
    fa_i64 kv_head_stride, page_stride;
    int batch, q_len, heads, kv_heads, group;
    int table_stride, page_shift;
    int causal, window_left, window_right;
    int num_splits, keys_per_split, row_chunks;
    float scale_log2;          // scale * log2(e): base-2 logit per unit of q.k (no softcap)
    float softcap;             // 0: off
    float softcap_log2;        // softcap * log2(e)
    float scale_over_softcap;  // scale / softcap
};

static_assert(sizeof(fa_decode_params) == 232, "fa_decode_params must match FastAttention.Gpu.DecodeParams");

FA_DEVICE float fa_log2(float x) { float r; asm("lg2.approx.f32 %0, %1;" : "=f"(r) : "f"(x)); return r; }
// tanh without a libdevice call (tanhf is an out-of-line call that costs a stack frame on sm_80): an odd Taylor
// polynomial below |x| = 0.125 (error < 2e-10 relative), else 1 - 2 / (e^(2|x|) + 1) (error ~1e-6 relative).
FA_DEVICE float fa_tanh(float x)
{
    const float a = x < 0.f ? -x : x;
    float t;
    if (a < 0.125f)
    {
        const float x2 = x * x;
        return x * (1.f + x2 * (-1.f / 3.f + x2 * (2.f / 15.f + x2 * (-17.f / 315.f))));
    }
    t = 1.f - 2.f / (fa_exp2(2.f * FA_LOG2E * a) + 1.f);
    return x < 0.f ? -t : t;
}

// Base-2 logit of a raw dot product q.k.
FA_DEVICE float fa_logit(const fa_decode_params& p, float dot)
{
    return p.softcap > 0.f ? p.softcap_log2 * fa_tanh(dot * p.scale_over_softcap) : dot * p.scale_log2;
}

// Visible keys [lo, hi] of query row qi of a batch entry with len cached tokens (hi = -1 .. len - 1).
FA_DEVICE int fa_row_lo(const fa_decode_params& p, int qi, int len)
{
    if (p.window_left < 0) return 0;
    fa_i64 lo = (fa_i64)qi + len - p.q_len - p.window_left;
    return (int)(lo < 0 ? 0 : lo > len ? len : lo);
}
FA_DEVICE int fa_row_hi(const fa_decode_params& p, int qi, int len)
{
    fa_i64 hi = (fa_i64)len - 1;
    const fa_i64 diag = (fa_i64)qi + len - p.q_len;
    if (p.causal && diag < hi) hi = diag;
    if (p.window_right >= 0 && diag + p.window_right < hi) hi = diag + p.window_right;
    return (int)(hi < -1 ? -1 : hi);
}

// Writes one finished row element: O directly (one split) or the split's partial output (several).
// m2: base-2 max of the row, l: sum of 2^(logit - m2), acc: sum of 2^(logit - m2) * v[d].
FA_DEVICE void fa_store_row(const fa_decode_params& p, int b, int qi, int h, int split, int d, float m2, float l, float acc)
{
    const bool empty = m2 == FA_NEG_INF;
    const float out = empty ? 0.f : acc / l;
    const float lse2 = empty ? FA_NEG_INF : m2 + fa_log2(l);
    if (p.num_splits == 1)
    {
        p.o[(fa_i64)b * p.o_stride_b + (fa_i64)qi * p.o_stride_s + (fa_i64)h * p.o_stride_h + d] = fa_from_float(out);
        if (d == 0 && p.lse != 0)
            p.lse[(fa_i64)b * p.lse_stride_b + (fa_i64)h * p.lse_stride_h + (fa_i64)qi * p.lse_stride_s] = empty ? FA_NEG_INF : lse2 * FA_LN2;
    }
    else
    {
        const fa_i64 part = (((fa_i64)b * p.heads + h) * p.q_len + qi) * p.num_splits + split;
        p.part_o[part * FA_D + d] = out;
        if (d == 0) p.part_lse[part] = lse2;
    }
}

// The rows and keys one tuned block covers (grid (Hkv, B, row_chunks * num_splits), blockIdx.z = chunk * num_splits +
// split): rows [row0, row0 + rows) of the q_len * group rows sharing KV head kvh, over the len keys of batch entry b.
struct fa_decode_block
{
    int kvh, b, split, row0, rows, len;
};
FA_DEVICE fa_decode_block fa_block_of(const fa_decode_params& p)
{
    fa_decode_block k;
    k.kvh = blockIdx.x;
    k.b = blockIdx.y;
    k.split = blockIdx.z % p.num_splits;
    k.row0 = (blockIdx.z / p.num_splits) * FA_ROWS;
    k.rows = min(FA_ROWS, p.q_len * p.group - k.row0);
    k.len = p.seq_lens[k.b];
    return k;
}

#if FA_DTYPE != FA_DTYPE_F32
// ---- tuned kernel, fp16 / bf16: tensor cores, K/V pages staged in shared memory --------------------------------
// Why this shape (measured on H200: the previous vectorised SIMT kernel reached ~14% of HBM bandwidth): a decode is
// bound by how many bytes each SM keeps in flight (~4.8 TB/s x ~700 ns / 132 SMs = ~25 KB per SM). Here every
// block keeps FA_STAGES - 1 whole K/V tiles (64 keys, 16-byte cp.async, zero-filled past the block's keys) in flight
// while it computes on the oldest, and the page ids of a tile are read one iteration before its copies are issued,
// so neither the page-table lookup nor the math ever stalls the memory stream. The math runs on tensor cores
// (mma.m16n8k16, fp32 accumulate), a few instructions per 16 keys instead of one FMA per element and row plus a
// shuffle reduction per key.
//
// grid: (Hkv, B, row_chunks * num_splits), blockIdx.z = chunk * num_splits + split; block: 128 threads (4 warps);
// dynamic shared memory FA_SMEM_BYTES (DecodeLaunchPlan.TunedSharedMemoryBytes). Block rows are rows
// [chunk * 8, chunk * 8 + rows) of the q_len * group rows sharing KV head blockIdx.x (row r: query position
// r / group of query head kvh * group + r % group); they are rows 0-7 of the 16-row mma tile (rows 8-15 are zero).
// Key tile n covers keys [k_begin + 64 n, +64); warp w owns keys 16w..16w+15 of it and keeps its own online softmax
// (max, sum, O) for the 8 rows; the 4 warps are merged through shared memory at the end.
// Fragment layouts and the swizzle are those of attention_fwd.cu (see its header).
#define FA_KT 64                                                 // keys per K/V tile (16 per warp)
#define FA_STAGES (FA_D == 256 ? 2 : 3)                          // K/V tiles in the shared-memory ring
#define FA_DCH (FA_D / 8)                                        // 16-byte chunks per row
#define FA_DB (FA_D / 8)                                         // n8 blocks of O
#define FA_CPT (FA_KT * FA_DCH / FA_THREADS)                     // chunks of a K (or V) tile each thread copies
#define FA_TILE_ELEMS (FA_KT * FA_D)                             // one K or V tile
#define FA_PAGES_OFF (FA_STAGES * 2 * FA_TILE_ELEMS * 2)         // byte offset of the page ids [2][FA_KT]
#define FA_SMEM_BYTES (FA_PAGES_OFF + 2 * FA_KT * 4)
static_assert(FA_WARPS * 16 == FA_KT, "each warp owns 16 keys of a tile");
static_assert(FA_WARPS * FA_ROWS * FA_D * 4 + 2 * FA_WARPS * FA_ROWS * 4 <= FA_PAGES_OFF, "the merge fits the K/V ring");

// Shared layout of a [FA_KT][FA_D] tile: chunk c (16 bytes) of row r sits at chunk c ^ (r % 8) of the row, so the 8
// rows one ldmatrix 8x8 matrix reads fall in 8 different bank groups (FA_D is a multiple of 64). Addresses are
// written as a per-lane register part plus compile-time offsets (the XOR only touches the low 3 bits of the chunk),
// so the unrolled loops below need 4 address registers each instead of one per chunk.
#define FA_ROW_BYTES (FA_D * 2)

// Page id of key j of the block (0 for keys outside [0, k_end): never used, their copies are zero-filled).
FA_DEVICE int fa_page_of(const int* table, int j, int k_end, int page_shift)
{
    return j < k_end ? table[j >> page_shift] : 0;
}

// Queues the copies of key tile `tile` (keys tile0 .. tile0 + 63) into ring slot tile % FA_STAGES: K and V rows through
// the page ids in `pages`, keys >= k_end zero-filled (source clamped to the head's first row, which exists).
FA_DEVICE void fa_issue_tile(const fa_decode_params& p, fa_u32 k_slot, fa_u32 v_slot, const fa_elem* k_head,
    const fa_elem* v_head, const int* pages, int tile0, int k_end, int tid)
{
    // Copy i of this thread: row r0 + i * RS, chunk c (RS = FA_THREADS / FA_DCH rows per pass, a power of two, and
    // r0 < RS, so (r0 + i * RS) % 8 = (r0 % 8) ^ (i * RS % 8)).
    constexpr int RS = FA_THREADS / FA_DCH;
    const int r0 = tid / FA_DCH, c = tid % FA_DCH;
    const int sw = c ^ (r0 & 7);
    const fa_u32 lane_off = r0 * FA_ROW_BYTES;
    const int slot_mask = (1 << p.page_shift) - 1;
#pragma unroll
    for (int i = 0; i < FA_CPT; i++)
    {
        const int r = r0 + i * RS;
        const int j = tile0 + r;
        const bool ok = j < k_end;
        const fa_i64 off = ok ? (fa_i64)pages[r] * p.page_stride + (fa_i64)(j & slot_mask) * FA_D + c * 8 : 0;
        const fa_u32 dst = lane_off + i * RS * FA_ROW_BYTES + ((sw ^ ((i * RS) & 7)) << 4);
        fa_cp_async_16_zfill(k_slot + dst, k_head + off, ok);
        fa_cp_async_16_zfill(v_slot + dst, v_head + off, ok);
    }
}

// Raw 16-bit bits of a query element pair (d, d + 1) packed for an mma A register (d in the low half).
FA_DEVICE fa_u32 fa_q_pair(const fa_elem* q, int d)
{
    return (fa_u32)q[d].bits | ((fa_u32)q[d + 1].bits << 16);
}

extern "C" __global__ void __launch_bounds__(FA_THREADS) FA_KERNEL(fa_paged_decode_hd)(const fa_decode_params p)
{
    extern __shared__ fa_vec16 fa_smem_chunks[];   // dynamic shared memory, 16-byte aligned by its type
    unsigned char* smem_ptr = (unsigned char*)fa_smem_chunks;
    int (*s_pages)[FA_KT] = (int (*)[FA_KT])(smem_ptr + FA_PAGES_OFF);
    const fa_u32 smem = fa_smem_addr(smem_ptr);

    const auto [kvh, b, split, row0, rows, len] = fa_block_of(p);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t = lane & 3;   // fragment row group, thread in group

    // This lane's query row g (rows >= `rows` are padding: zero Q, nothing visible) and its visible keys.
    const bool row_ok = g < rows;
    const int qi = (row0 + (row_ok ? g : 0)) / p.group;
    const int lo = row_ok ? fa_row_lo(p, qi, len) : 1;
    const int hi = row_ok ? fa_row_hi(p, qi, len) : 0;

    // Keys of this split that some row of the block sees (bounds are monotone in the query position).
    const fa_i64 split_begin = (fa_i64)split * p.keys_per_split;
    const fa_i64 split_end = split_begin + p.keys_per_split;
    const int lo_first = fa_row_lo(p, row0 / p.group, len);
    const int hi_last = fa_row_hi(p, (row0 + rows - 1) / p.group, len);
    const int k_begin = (int)(split_begin > lo_first ? split_begin : lo_first);
    const int k_end = (int)(split_end < (fa_i64)hi_last + 1 ? split_end : (fa_i64)hi_last + 1);
    const int tiles = k_end > k_begin ? (k_end - k_begin + FA_KT - 1) / FA_KT : 0;

    // Q as mma A registers, straight from global memory (rows g; rows g + 8 are zero): qa[kk] = d 16kk + 2t (+1) and
    // d 16kk + 8 + 2t (+1).
    fa_u32 qa[FA_D / 16][2];
    {
        const int h = kvh * p.group + (row0 + (row_ok ? g : 0)) % p.group;
        const fa_elem* q = p.q + (fa_i64)b * p.q_stride_b + (fa_i64)qi * p.q_stride_s + (fa_i64)h * p.q_stride_h;
#pragma unroll
        for (int kk = 0; kk < FA_D / 16; kk++)
        {
            qa[kk][0] = row_ok ? fa_q_pair(q, 16 * kk + 2 * t) : 0u;
            qa[kk][1] = row_ok ? fa_q_pair(q, 16 * kk + 8 + 2 * t) : 0u;
        }
    }

    const fa_elem* k_head = p.k_pool + (fa_i64)kvh * p.kv_head_stride;
    const fa_elem* v_head = p.v_pool + (fa_i64)kvh * p.kv_head_stride;
    const int* table = p.block_tables + (fa_i64)b * p.table_stride;
    const fa_u32 ring = smem;                                   // slot s: K at ring + 2s tiles, V after it
#define FA_K_SLOT(s) (ring + (fa_u32)(2 * (s)) * FA_TILE_ELEMS * 2)
#define FA_V_SLOT(s) (ring + (fa_u32)(2 * (s) + 1) * FA_TILE_ELEMS * 2)

    // Prologue: page ids of tiles 0 .. STAGES-2, their copies, then the page ids of tile STAGES-1. s_pages[x & 1]
    // holds the ids of tile x from the iteration before the one that issues it.
#pragma unroll
    for (int x = 0; x < FA_STAGES - 1; x++)
    {
        if (tid < FA_KT) s_pages[x & 1][tid] = fa_page_of(table, k_begin + x * FA_KT + tid, k_end, p.page_shift);
    }
    __syncthreads();
#pragma unroll
    for (int x = 0; x < FA_STAGES - 1; x++)
    {
        if (x < tiles) fa_issue_tile(p, FA_K_SLOT(x), FA_V_SLOT(x), k_head, v_head, s_pages[x & 1], k_begin + x * FA_KT, k_end, tid);
        fa_cp_async_commit();
    }
    __syncthreads();
    if (tid < FA_KT)
        s_pages[(FA_STAGES - 1) & 1][tid] = fa_page_of(table, k_begin + (FA_STAGES - 1) * FA_KT + tid, k_end, p.page_shift);

    // ldmatrix addresses within a tile. K (S = Q·Kᵀ, step kk): lane l reads key 16w + l % 8 + 8 (l / 16), chunk
    // 2kk + (l / 8) % 2. V (O += P·V, step dd): key 16w + l % 16, chunk 2dd + l / 16. In both the row is 8k + l % 8, so
    // the swizzled chunk is 8 (kk / 4) + ((2 (kk % 4) + bit) ^ (l % 8)): k_off[kk % 4] + 128 (kk / 4) bytes.
    fa_u32 k_off[4], v_off[4];
#pragma unroll
    for (int i = 0; i < 4; i++)
    {
        k_off[i] = (warp * 16 + (lane & 7) + ((lane >> 4) << 3)) * FA_ROW_BYTES + (((2 * i + ((lane >> 3) & 1)) ^ (lane & 7)) << 4);
        v_off[i] = (warp * 16 + (lane & 15)) * FA_ROW_BYTES + (((2 * i + (lane >> 4)) ^ (lane & 7)) << 4);
    }

    float o_acc[FA_DB][4];
#pragma unroll
    for (int i = 0; i < FA_DB; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) o_acc[i][e] = 0.f;
    float m_run = FA_NEG_INF;   // row g's running max (base-2 logits)
    float l_run = 0.f;          // this lane's share of row g's running sum

    for (int n = 0; n < tiles; n++)
    {
        // Tile n has landed (this thread's copies; after the barrier everyone's), every warp is done with tile n - 1
        // (whose slot the copies below overwrite), and the page ids of tile n + STAGES - 1 are visible.
        fa_cp_async_wait<FA_STAGES - 2>();
        __syncthreads();
        const int next = n + FA_STAGES - 1;
        if (next < tiles)
            fa_issue_tile(p, FA_K_SLOT(next % FA_STAGES), FA_V_SLOT(next % FA_STAGES), k_head, v_head, s_pages[next & 1],
                k_begin + next * FA_KT, k_end, tid);
        fa_cp_async_commit();
        // Page ids of tile n + STAGES, read now and published after the math (the load's latency hides behind it).
        const int page_ahead = tid < FA_KT ? fa_page_of(table, k_begin + (next + 1) * FA_KT + tid, k_end, p.page_shift) : 0;

        const fa_u32 k_st = FA_K_SLOT(n % FA_STAGES), v_st = FA_V_SLOT(n % FA_STAGES);
        const int key0 = k_begin + n * FA_KT + warp * 16;   // this warp's first key

        // S = Q·Kᵀ, 16 rows x this warp's 16 keys. K: ldmatrix.x4 matrices (keys 0-7, d 0-7), (keys 0-7, d 8-15),
        // (keys 8-15, d 0-7), (keys 8-15, d 8-15) = B of n-block 0 and of n-block 1.
        float s[2][4];
#pragma unroll
        for (int nb = 0; nb < 2; nb++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[nb][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < FA_D / 16; kk++)
        {
            const fa_u32 a[4] = {qa[kk][0], 0u, qa[kk][1], 0u};
            fa_u32 kb[4];
            fa_ldmatrix_x4(kb, k_st + k_off[kk & 3] + (kk >> 2) * 128);
            const fa_u32 b0[2] = {kb[0], kb[1]};
            const fa_u32 b1[2] = {kb[2], kb[3]};
            fa_mma_m16n8k16(s[0], a, b0);
            fa_mma_m16n8k16(s[1], a, b1);
        }

        // Logits of row g (elements 0, 1 of each n-block: keys key0 + 8nb + 2t (+1)); keys the row does not see,
        // and keys past the block's end, get -inf. Rows g + 8 (elements 2, 3) are padding and stay out of P.
        float mx = FA_NEG_INF;
#pragma unroll
        for (int nb = 0; nb < 2; nb++)
#pragma unroll
            for (int e = 0; e < 2; e++)
            {
                const int j = key0 + 8 * nb + 2 * t + e;
                const bool seen = j < k_end && j >= lo && j <= hi;
                s[nb][e] = seen ? fa_logit(p, s[nb][e]) : FA_NEG_INF;
                mx = fa_max(mx, s[nb][e]);
            }
        // Online softmax of row g over the 4 lanes of its group; a row that has seen nothing keeps max -inf and
        // subtracts 0 instead (no (-inf) - (-inf)).
        mx = fa_max(mx, fa_shfl_xor(mx, 1));
        mx = fa_max(mx, fa_shfl_xor(mx, 2));
        const float m_new = fa_max(m_run, mx);
        const float ref = m_new == FA_NEG_INF ? 0.f : m_new;
        const float alpha = fa_exp2(m_run - ref);
        m_run = m_new;
        float pr[2][2];
#pragma unroll
        for (int nb = 0; nb < 2; nb++)
#pragma unroll
            for (int e = 0; e < 2; e++) pr[nb][e] = fa_exp2(s[nb][e] - ref);
        l_run = l_run * alpha + (pr[0][0] + pr[0][1]) + (pr[1][0] + pr[1][1]);
#pragma unroll
        for (int i = 0; i < FA_DB; i++)
        {
            o_acc[i][0] *= alpha;
            o_acc[i][1] *= alpha;
        }

        // O += P·V. A = P rounded to 16 bits (row g: keys 2t.. of n-block 0, then of n-block 1; rows g + 8 zero).
        // V: ldmatrix.x4.trans matrices (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15)
        // = B of d-block 2dd and of d-block 2dd + 1.
        const fa_u32 pa[4] = {fa_pack2(pr[0][0], pr[0][1]), 0u, fa_pack2(pr[1][0], pr[1][1]), 0u};
#pragma unroll
        for (int dd = 0; dd < FA_D / 16; dd++)
        {
            fa_u32 vb[4];
            fa_ldmatrix_x4_trans(vb, v_st + v_off[dd & 3] + (dd >> 2) * 128);
            const fa_u32 b0[2] = {vb[0], vb[1]};
            const fa_u32 b1[2] = {vb[2], vb[3]};
            fa_mma_m16n8k16(o_acc[2 * dd], pa, b0);
            fa_mma_m16n8k16(o_acc[2 * dd + 1], pa, b1);
        }

        // Slot (next + 1) & 1 was last read when tile next - 1 was issued, before this iteration's barrier.
        if (tid < FA_KT) s_pages[(next + 1) & 1][tid] = page_ahead;
    }
#undef FA_K_SLOT
#undef FA_V_SLOT

    // Merge the 4 warps through shared memory (the K/V ring is free once every copy has landed and every warp is
    // done): per warp and row its max, sum and unnormalised output.
    fa_cp_async_wait<0>();
    __syncthreads();
    float* s_o = (float*)smem_ptr;                                   // [FA_WARPS][FA_ROWS][FA_D]
    float* s_m = s_o + FA_WARPS * FA_ROWS * FA_D;                    // [FA_WARPS][FA_ROWS]
    float* s_l = s_m + FA_WARPS * FA_ROWS;                           // [FA_WARPS][FA_ROWS]
    l_run += fa_shfl_xor(l_run, 1);
    l_run += fa_shfl_xor(l_run, 2);
    if (g < FA_ROWS)
    {
        float* o_row = s_o + (warp * FA_ROWS + g) * FA_D;
#pragma unroll
        for (int i = 0; i < FA_DB; i++)
        {
            o_row[8 * i + 2 * t] = o_acc[i][0];
            o_row[8 * i + 2 * t + 1] = o_acc[i][1];
        }
        if (t == 0)
        {
            s_m[warp * FA_ROWS + g] = m_run;
            s_l[warp * FA_ROWS + g] = l_run;
        }
    }
    __syncthreads();
    for (int i = tid; i < rows * FA_D; i += FA_THREADS)
    {
        const int r = i / FA_D, d = i % FA_D;
        float mx = FA_NEG_INF;
#pragma unroll
        for (int w = 0; w < FA_WARPS; w++) mx = fa_max(mx, s_m[w * FA_ROWS + r]);
        const float ref = mx == FA_NEG_INF ? 0.f : mx;
        float sum = 0.f, out = 0.f;
#pragma unroll
        for (int w = 0; w < FA_WARPS; w++)
        {
            const float wt = fa_exp2(s_m[w * FA_ROWS + r] - ref);
            sum += s_l[w * FA_ROWS + r] * wt;
            out += s_o[(w * FA_ROWS + r) * FA_D + d] * wt;
        }
        const int row = row0 + r;
        fa_store_row(p, b, row / p.group, kvh * p.group + row % p.group, split, d, mx, sum, out);
    }
}
#else
// ---- tuned kernel, fp32: vectorised SIMT (tensor cores would round fp32 to tf32) -------------------------------

// Elements of a 16-byte vector as floats.
FA_DEVICE void fa_vec_to_float(const fa_vec16& v, float (&f)[FA_VEC])
{
    f[0] = fa_bits_to_float(v.x); f[1] = fa_bits_to_float(v.y); f[2] = fa_bits_to_float(v.z); f[3] = fa_bits_to_float(v.w);
}

// grid: (Hkv, B, row_chunks * num_splits) with blockIdx.z = chunk * num_splits + split; block: (128).
// Block rows are rows [chunk * 8, chunk * 8 + rows) of the q_len * group rows sharing KV head blockIdx.x;
// row r is query position r / group of query head kvh * group + r % group.
extern "C" __global__ void __launch_bounds__(FA_THREADS) FA_KERNEL(fa_paged_decode_hd)(const fa_decode_params p)
{
    __shared__ __align__(16) float s_q[FA_ROWS][FA_D];
    __shared__ float s_m[FA_GROUPS][FA_ROWS];
    __shared__ float s_l[FA_GROUPS][FA_ROWS];
    __shared__ __align__(16) float s_acc[FA_GROUPS][FA_ROWS][FA_D];

    const auto [kvh, b, split, row0, rows, len] = fa_block_of(p);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int kg = warp * FA_GPW + lane / FA_LANES;   // key group of this lane
    const int kl = lane % FA_LANES;                     // lane within the key group

    for (int i = tid; i < FA_ROWS * FA_D; i += FA_THREADS)
    {
        const int r = i / FA_D, d = i % FA_D;
        float x = 0.f;
        if (r < rows)
        {
            const int row = row0 + r, qi = row / p.group, h = kvh * p.group + row % p.group;
            x = fa_to_float(p.q[(fa_i64)b * p.q_stride_b + (fa_i64)qi * p.q_stride_s + (fa_i64)h * p.q_stride_h + d]);
        }
        s_q[r][d] = x;
    }

    int lo[FA_ROWS], hi[FA_ROWS];
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++)
    {
        const int qi = (row0 + (r < rows ? r : 0)) / p.group;
        lo[r] = r < rows ? fa_row_lo(p, qi, len) : 1;
        hi[r] = r < rows ? fa_row_hi(p, qi, len) : 0;
    }
    // Keys of this split that some row of the block sees (bounds are monotone in the query position).
    const fa_i64 split_begin = (fa_i64)split * p.keys_per_split;
    const fa_i64 split_end = split_begin + p.keys_per_split;
    const int hi_last = fa_row_hi(p, (row0 + rows - 1) / p.group, len);
    const int k_begin = (int)(split_begin > lo[0] ? split_begin : lo[0]);
    const int k_end = (int)(split_end < (fa_i64)hi_last + 1 ? split_end : (fa_i64)hi_last + 1);
    __syncthreads();

    float m[FA_ROWS], l[FA_ROWS], acc[FA_ROWS][FA_EPL];
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++)
    {
        m[r] = FA_NEG_INF;
        l[r] = 0.f;
#pragma unroll
        for (int e = 0; e < FA_EPL; e++) acc[r][e] = 0.f;
    }

    const fa_elem* k_head = p.k_pool + (fa_i64)kvh * p.kv_head_stride + kl * FA_VEC;
    const fa_elem* v_head = p.v_pool + (fa_i64)kvh * p.kv_head_stride + kl * FA_VEC;
    const int* table = p.block_tables + (fa_i64)b * p.table_stride;
    const int slot_mask = (1 << p.page_shift) - 1;

    // The loop bound is the same for every lane of a warp (shuffles below need the whole warp); keys past k_end
    // are neither loaded nor counted.
    for (int w0 = k_begin + warp * FA_GPW * FA_KPS; w0 < k_end; w0 += FA_GROUPS * FA_KPS)
    {
        const int j0 = w0 + (lane / FA_LANES) * FA_KPS;
        fa_vec16 kv[FA_KPS][FA_VPL], vv[FA_KPS][FA_VPL];
#pragma unroll
        for (int t = 0; t < FA_KPS; t++)
        {
            const int j = j0 + t;
            if (j < k_end)
            {
                const int page = table[j >> p.page_shift];
                const fa_i64 row = (fa_i64)page * p.page_stride + (fa_i64)(j & slot_mask) * FA_D;
#pragma unroll
                for (int v = 0; v < FA_VPL; v++)
                {
                    kv[t][v] = *reinterpret_cast<const fa_vec16*>(k_head + row + v * FA_LANES * FA_VEC);
                    vv[t][v] = *reinterpret_cast<const fa_vec16*>(v_head + row + v * FA_LANES * FA_VEC);
                }
            }
            else
            {
#pragma unroll
                for (int v = 0; v < FA_VPL; v++)
                {
                    kv[t][v] = fa_vec16{0u, 0u, 0u, 0u};
                    vv[t][v] = fa_vec16{0u, 0u, 0u, 0u};
                }
            }
        }

        // s[t][r] = q_r . k_{j0+t}: each lane's slice, then summed over the key group's lanes.
        float s[FA_KPS][FA_ROWS];
#pragma unroll
        for (int t = 0; t < FA_KPS; t++)
        {
#pragma unroll
            for (int r = 0; r < FA_ROWS; r++) s[t][r] = 0.f;
#pragma unroll
            for (int v = 0; v < FA_VPL; v++)
            {
                float kf[FA_VEC];
                fa_vec_to_float(kv[t][v], kf);
                const int e0 = (v * FA_LANES + kl) * FA_VEC;
#pragma unroll
                for (int r = 0; r < FA_ROWS; r++)
                {
                    if (r < rows)
                    {
#pragma unroll
                        for (int i = 0; i < FA_VEC; i++) s[t][r] += kf[i] * s_q[r][e0 + i];
                    }
                }
            }
        }
#pragma unroll
        for (int t = 0; t < FA_KPS; t++)
        {
#pragma unroll
            for (int r = 0; r < FA_ROWS; r++)
            {
                if (r < rows) s[t][r] = fa_group_sum<FA_LANES>(s[t][r]);
            }
        }

        // Online softmax per row over the group's keys; masked and missing keys get probability 0.
        float alpha[FA_ROWS];
#pragma unroll
        for (int r = 0; r < FA_ROWS; r++)
        {
            float mx = m[r];
#pragma unroll
            for (int t = 0; t < FA_KPS; t++)
            {
                const int j = j0 + t;
                const bool seen = r < rows && j < k_end && j >= lo[r] && j <= hi[r];
                s[t][r] = seen ? fa_logit(p, s[t][r]) : FA_NEG_INF;
                mx = fa_max(mx, s[t][r]);
            }
            // A row that has seen nothing yet keeps max -inf; subtracting 0 then keeps 2^(-inf) = 0 (no NaN).
            const float ref = mx == FA_NEG_INF ? 0.f : mx;
            alpha[r] = fa_exp2(m[r] - ref);
            float sum = 0.f;
#pragma unroll
            for (int t = 0; t < FA_KPS; t++)
            {
                s[t][r] = fa_exp2(s[t][r] - ref);
                sum += s[t][r];
            }
            l[r] = l[r] * alpha[r] + sum;
            m[r] = mx;
#pragma unroll
            for (int e = 0; e < FA_EPL; e++) acc[r][e] *= alpha[r];
        }
#pragma unroll
        for (int t = 0; t < FA_KPS; t++)
        {
#pragma unroll
            for (int v = 0; v < FA_VPL; v++)
            {
                float vf[FA_VEC];
                fa_vec_to_float(vv[t][v], vf);
#pragma unroll
                for (int r = 0; r < FA_ROWS; r++)
                {
#pragma unroll
                    for (int i = 0; i < FA_VEC; i++) acc[r][v * FA_VEC + i] += s[t][r] * vf[i];
                }
            }
        }
    }

    // Merge the key groups: max, rescaled sums and outputs through shared memory.
#pragma unroll
    for (int r = 0; r < FA_ROWS; r++)
    {
#pragma unroll
        for (int v = 0; v < FA_VPL; v++)
        {
#pragma unroll
            for (int i = 0; i < FA_VEC; i++) s_acc[kg][r][(v * FA_LANES + kl) * FA_VEC + i] = acc[r][v * FA_VEC + i];
        }
        if (kl == 0)
        {
            s_m[kg][r] = m[r];
            s_l[kg][r] = l[r];
        }
    }
    __syncthreads();
    for (int i = tid; i < rows * FA_D; i += FA_THREADS)
    {
        const int r = i / FA_D, d = i % FA_D;
        float mx = FA_NEG_INF;
#pragma unroll
        for (int g = 0; g < FA_GROUPS; g++) mx = fa_max(mx, s_m[g][r]);
        const float ref = mx == FA_NEG_INF ? 0.f : mx;
        float sum = 0.f, out = 0.f;
#pragma unroll
        for (int g = 0; g < FA_GROUPS; g++)
        {
            const float w = fa_exp2(s_m[g][r] - ref);
            sum += s_l[g][r] * w;
            out += s_acc[g][r][d] * w;
        }
        const int row = row0 + r;
        fa_store_row(p, b, row / p.group, kvh * p.group + row % p.group, split, d, mx, sum, out);
    }
}
#endif

// ---- plain kernel ------------------------------------------------------------------------------------------------
// grid: (H, B, num_splits), block: (128). Thread t owns elements t and t + 128 of the row.
extern "C" __global__ void __launch_bounds__(FA_THREADS) FA_KERNEL(fa_paged_decode_simt_hd)(const fa_decode_params p)
{
    __shared__ float s_red[FA_WARPS];
    const int h = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
    const int kvh = h / p.group;
    const int len = p.seq_lens[b];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int* table = p.block_tables + (fa_i64)b * p.table_stride;
    const int slot_mask = (1 << p.page_shift) - 1;
    const fa_i64 head = (fa_i64)kvh * p.kv_head_stride;
    constexpr int PER_THREAD = (FA_D + FA_THREADS - 1) / FA_THREADS;

    for (int qi = 0; qi < p.q_len; qi++)
    {
        float qv[PER_THREAD], acc[PER_THREAD];
#pragma unroll
        for (int x = 0; x < PER_THREAD; x++)
        {
            const int d = tid + x * FA_THREADS;
            qv[x] = d < FA_D ? fa_to_float(p.q[(fa_i64)b * p.q_stride_b + (fa_i64)qi * p.q_stride_s + (fa_i64)h * p.q_stride_h + d]) : 0.f;
            acc[x] = 0.f;
        }
        const fa_i64 split_begin = (fa_i64)split * p.keys_per_split;
        const fa_i64 split_end = split_begin + p.keys_per_split;
        const int lo = fa_row_lo(p, qi, len), hi = fa_row_hi(p, qi, len);
        const int k_begin = (int)(split_begin > lo ? split_begin : lo);
        const int k_end = (int)(split_end < (fa_i64)hi + 1 ? split_end : (fa_i64)hi + 1);
        float m = FA_NEG_INF, l = 0.f;
        for (int j = k_begin; j < k_end; j++)
        {
            const fa_i64 row = head + (fa_i64)table[j >> p.page_shift] * p.page_stride + (fa_i64)(j & slot_mask) * FA_D;
            float dot = 0.f;
#pragma unroll
            for (int x = 0; x < PER_THREAD; x++)
            {
                const int d = tid + x * FA_THREADS;
                if (d < FA_D) dot += qv[x] * fa_to_float(p.k_pool[row + d]);
            }
            dot = fa_warp_sum(dot);
            if (lane == 0) s_red[warp] = dot;
            __syncthreads();
            float total = 0.f;
#pragma unroll
            for (int w = 0; w < FA_WARPS; w++) total += s_red[w];
            __syncthreads();
            const float s = fa_logit(p, total);
            const float mx = fa_max(m, s);
            const float alpha = fa_exp2(m - mx), pj = fa_exp2(s - mx);
            l = l * alpha + pj;
            m = mx;
#pragma unroll
            for (int x = 0; x < PER_THREAD; x++)
            {
                const int d = tid + x * FA_THREADS;
                if (d < FA_D) acc[x] = acc[x] * alpha + pj * fa_to_float(p.v_pool[row + d]);
            }
        }
#pragma unroll
        for (int x = 0; x < PER_THREAD; x++)
        {
            const int d = tid + x * FA_THREADS;
            if (d < FA_D) fa_store_row(p, b, qi, h, split, d, m, l, acc[x]);
        }
    }
}

// ---- combine -----------------------------------------------------------------------------------------------------
// One warp per output row n = (b * H + h) * q_len + qi: O = sum_s w_s * part_o[s] / sum_s w_s with
// w_s = 2^(lse_s - max lse); LSE = (max + log2(sum w)) * ln 2. Splits that saw no key have lse -inf (weight 0).
// grid: (ceil(B * H * q_len / 4)), block: (128)
extern "C" __global__ void __launch_bounds__(FA_THREADS) FA_KERNEL(fa_decode_combine_hd)(const fa_decode_params p)
{
    const fa_i64 n = (fa_i64)blockIdx.x * FA_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (n >= (fa_i64)p.batch * p.heads * p.q_len) return;
    const int qi = (int)(n % p.q_len), h = (int)(n / p.q_len % p.heads), b = (int)(n / p.q_len / p.heads);
    const int splits = p.num_splits;
    const float* lse = p.part_lse + n * splits;
    const float* part = p.part_o + n * splits * FA_D;

    float mx = FA_NEG_INF;
    for (int s = lane; s < splits; s += 32) mx = fa_max(mx, lse[s]);
    mx = fa_warp_max(mx);
    const float ref = mx == FA_NEG_INF ? 0.f : mx;
    float sum = 0.f;
    for (int s = lane; s < splits; s += 32) sum += fa_exp2(lse[s] - ref);
    sum = fa_warp_sum(sum);
    fa_elem* o = p.o + (fa_i64)b * p.o_stride_b + (fa_i64)qi * p.o_stride_s + (fa_i64)h * p.o_stride_h;
    for (int d = lane; d < FA_D; d += 32)
    {
        float out = 0.f;
        for (int s = 0; s < splits; s++) out += fa_exp2(lse[s] - ref) * part[(fa_i64)s * FA_D + d];
        o[d] = fa_from_float(mx == FA_NEG_INF ? 0.f : out / sum);
    }
    if (lane == 0 && p.lse != 0)
        p.lse[(fa_i64)b * p.lse_stride_b + (fa_i64)h * p.lse_stride_h + (fa_i64)qi * p.lse_stride_s] =
            mx == FA_NEG_INF ? FA_NEG_INF : (mx + fa_log2(sum)) * FA_LN2;
}
