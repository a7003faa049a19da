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
//  * fa_paged_decode_hd<D>_<t>: the tuned version, a vectorised SIMT kernel (no tensor cores: single-token decode
//    has q_len*group rows of 1..8, too few for a 16-row mma tile, and the kernel is bound by HBM bandwidth, not
//    math). One block per (KV head, batch entry, split x row chunk) holds up to 8 query rows that share the KV head,
//    so each K/V row is read once for all of them. A "key group" of LANES = min(32, D/VEC) lanes covers one key row
//    with 16-byte loads (VEC = 8 fp16/bf16 or 4 fp32 elements per load); each group takes 4 consecutive keys per
//    step and issues all 8 (K and V) row loads before using any, so every lane has 8+ 16-byte loads in flight.
//    Each group keeps its own online-softmax state (max, sum, output slice) for the rows; the groups are merged
//    through shared memory at the end.
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

// Elements of a 16-byte vector as floats.
FA_DEVICE void fa_vec_to_float(const fa_vec16& v, float (&f)[FA_VEC])
{
#if FA_DTYPE == FA_DTYPE_F32
    f[0] = fa_bits_to_float(v.x); f[1] = fa_bits_to_float(v.y); f[2] = fa_bits_to_float(v.z); f[3] = fa_bits_to_float(v.w);
#else
    fa_unpack2(v.x, f[0], f[1]); fa_unpack2(v.y, f[2], f[3]); fa_unpack2(v.z, f[4], f[5]); fa_unpack2(v.w, f[6], f[7]);
#endif
}

// ---- tuned kernel ------------------------------------------------------------------------------------------------
// grid: (Hkv, B, row_chunks * num_splits) with blockIdx.z = chunk * num_splits + split; block: (128).
// Block rows are rows [chunk * 8, chunk * 8 + rows) of the q_len * group rows sharing KV head blockIdx.x;
// row r is query position r / group of query head kvh * group + r % group.
extern "C" __global__ void __launch_bounds__(FA_THREADS) FA_KERNEL(fa_paged_decode_hd)(const fa_decode_params p)
{
    __shared__ __align__(16) float s_q[FA_ROWS][FA_D];
    __shared__ float s_m[FA_GROUPS][FA_ROWS];
    __shared__ float s_l[FA_GROUPS][FA_ROWS];
    __shared__ __align__(16) float s_acc[FA_GROUPS][FA_ROWS][FA_D];

    const int kvh = blockIdx.x, b = blockIdx.y;
    const int split = blockIdx.z % p.num_splits, chunk = blockIdx.z / p.num_splits;
    const int row0 = chunk * FA_ROWS;
    const int rows = min(FA_ROWS, p.q_len * p.group - row0);
    const int len = p.seq_lens[b];
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
