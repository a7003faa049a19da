// softmax.cu — fused row softmax over materialised attention scores [B, H, Sq, Sk] (attention maps):
// y = softmax(scale · x) along Sk with the attention mask rules (causal / window bottom-right aligned, per-sequence
// query and key lengths, block-sparse keep flags), max-subtracted, fp32 inside, in base 2 (log2 e folded into the
// scale). Masked keys get 0; a row that sees no key (or lies beyond its query length) is all zeros, never NaN.
// Same semantics as CpuAttention.Softmax (src/FastAttention.Cpu/Engine/FusedSoftmax.cs): for scale < 0 the logits
// are negated first and |scale| is applied to the max-subtracted differences; for scale == 0 every visible logit
// is 0, whatever the score (even NaN).
//
// Kernels (FA_NAME appends f32 / f16 / bf16); each handles any row count (grid-stride over rows):
//   fa_softmax_plain_*   plain SIMT: one warp per row, scalar strided loads, three passes (max, sum, write).
//   fa_softmax_group_*   tuned, Sk <= 256: 8 threads per row (16 rows per 128-thread CTA), otherwise as the warp kernel.
//   fa_softmax_warp_*    tuned, Sk <= 1024: one warp per row (4 rows per 128-thread CTA), 32 values per lane kept
//                        in registers, 16-byte loads/stores where aligned: one read, one write. Unit last stride.
//   fa_softmax_block_*   tuned, Sk <= 8192: one 256-thread CTA per row, 32 values per thread in registers; same
//                        layout requirement (the host sends other layouts to the online kernel).
//   fa_softmax_online_*  tuned, any Sk and any strides: one 256-thread CTA per row; pass 1 keeps a running (max, sum) per thread
//                        (online softmax), pass 2 re-reads and writes: two reads, one write.
// Tuned kernels read only the visible key range [lo, hi] of a row and write zeros elsewhere without reading.
// Each thread writes exactly the elements it read, after the row's reduction, so y may be x (in place).

#if !defined(FA_DTYPE)
#error "softmax.cu needs -DFA_DTYPE=0 (fp32), 1 (fp16) or 2 (bf16)"
#endif

// Launch parameters, passed by value. The C# mirror is FastAttention.Gpu.SoftmaxParams (same order, natural
// alignment, 176 bytes; a unit test checks the C# side, the static_assert below this side).
struct fa_softmax_params
{
    const fa_elem* x;              // scores        [B, H, Sq, Sk], element strides xs0..xs3
    fa_elem* y;                    // probabilities [B, H, Sq, Sk], element strides ys0..ys3 (may be x, same strides)
    const int* query_lengths;      // [B] valid query rows per sequence, or null (all Sq)
    const int* key_lengths;        // [B] valid keys per sequence, or null (all Sk)
    const unsigned char* keep;     // block mask [mask_heads, q_blocks, k_blocks] (1 = kept), or null (dense)
    fa_i64 xs0, xs1, xs2, xs3;     // strides of x (0 on a dimension of length 1)
    fa_i64 ys0, ys1, ys2, ys3;     // strides of y
    fa_i64 rows;                   // B * H * Sq
    int batch, heads, sq, sk;
    int causal, window_left, window_right;   // window bounds -1 = unbounded
    int mask_heads, q_blocks, k_blocks, block_q, block_k;
    float sign;                    // +1 (scale > 0), -1 (scale < 0), 0 (scale == 0: visible logits are 0)
    float log2_scale;              // |scale| * log2(e), or log2(e) when scale == 0
    int vec;                       // 1: unit last strides, 16-byte aligned bases and row strides: 16-byte accesses
    int unit;                      // 1: unit last strides (xs3 = ys3 = 1, or Sk = 1)
};
static_assert(sizeof(fa_softmax_params) == 176, "fa_softmax_params must match FastAttention.Gpu.SoftmaxParams");

#define FA_SOFTMAX_VEC (16 / (int)sizeof(fa_elem))       // elements per 16-byte access: 4 (fp32) or 8 (16-bit)
#define FA_SOFTMAX_PER_THREAD 32                          // values a thread keeps in registers (warp / block kernels)

FA_DEVICE float fa_neg_inf() { return fa_bits_to_float(0xff800000u); }

// One row's addresses and visible key range.
struct fa_softmax_row
{
    const fa_elem* x;
    fa_elem* y;
    fa_i64 xs, ys;                 // last-axis strides
    int lo, hi;                    // visible keys j in [lo, hi] (before the block mask); lo > hi: none
    const unsigned char* keep;     // this row's key-block flags [k_blocks], or null
};

// Row r = (b * heads + h) * sq + i. 32-bit division when every row index fits (a 64-bit division is a long
// software sequence, and rows of a few hundred keys cost little else).
FA_DEVICE fa_softmax_row fa_softmax_locate(const fa_softmax_params& p, fa_i64 r)
{
    int i, h, b;
    if (p.rows <= 0xffffffffLL)
    {
        const unsigned ur = (unsigned)r, bh = ur / (unsigned)p.sq;
        i = (int)(ur - bh * (unsigned)p.sq);
        b = (int)(bh / (unsigned)p.heads);
        h = (int)(bh - (unsigned)b * (unsigned)p.heads);
    }
    else
    {
        const fa_i64 bh = r / p.sq;
        i = (int)(r - bh * p.sq);
        b = (int)(bh / p.heads);
        h = (int)(bh - (fa_i64)b * p.heads);
    }
    fa_softmax_row row;
    row.x = p.x + b * p.xs0 + h * p.xs1 + i * p.xs2;
    row.y = p.y + b * p.ys0 + h * p.ys1 + i * p.ys2;
    row.xs = p.xs3;
    row.ys = p.ys3;
    const int lq = p.query_lengths ? p.query_lengths[b] : p.sq;
    const int lk = p.key_lengths ? p.key_lengths[b] : p.sk;
    const fa_i64 diag = (fa_i64)i + lk - lq;                // the aligned diagonal (bottom-right)
    fa_i64 lo = 0, hi = (fa_i64)lk - 1;
    if (p.window_left >= 0)
    {
        lo = diag - p.window_left;
        lo = lo < 0 ? 0 : (lo > lk ? lk : lo);
    }
    if (p.causal && diag < hi) hi = diag;
    if (p.window_right >= 0 && diag + p.window_right < hi) hi = diag + p.window_right;
    if (hi < -1) hi = -1;
    if (i >= lq)
    {
        lo = 1;
        hi = 0;
    }
    row.lo = (int)lo;
    row.hi = (int)hi;
    row.keep = p.keep ? p.keep + ((fa_i64)(p.mask_heads == 1 ? 0 : h) * p.q_blocks + i / p.block_q) * p.k_blocks : nullptr;
    return row;
}

// The logit of a visible score: sign · x (0 when the scale is 0, whatever x is).
FA_DEVICE float fa_softmax_logit(const fa_softmax_params& p, float x)
{
    return p.sign > 0.0f ? x : (p.sign < 0.0f ? -x : 0.0f);
}

FA_DEVICE bool fa_softmax_kept(const fa_softmax_params& p, const fa_softmax_row& row, fa_i64 j)
{
    return row.keep == nullptr || row.keep[j / p.block_k] != 0;
}

// ---- 16-byte vectors of elements ----------------------------------------------------------------------------

struct alignas(16) fa_softmax_v4 { fa_u32 w[4]; };

FA_DEVICE void fa_softmax_unpack(const fa_softmax_v4& q, float (&v)[FA_SOFTMAX_VEC])
{
#if FA_DTYPE == FA_DTYPE_F32
#pragma unroll
    for (int k = 0; k < 4; k++) v[k] = fa_bits_to_float(q.w[k]);
#else
#pragma unroll
    for (int k = 0; k < 4; k++) fa_unpack2(q.w[k], v[2 * k], v[2 * k + 1]);
#endif
}

FA_DEVICE fa_softmax_v4 fa_softmax_pack(const float (&v)[FA_SOFTMAX_VEC], float mul)
{
    fa_softmax_v4 q;
#if FA_DTYPE == FA_DTYPE_F32
#pragma unroll
    for (int k = 0; k < 4; k++) q.w[k] = fa_float_to_bits(v[k] * mul);
#else
#pragma unroll
    for (int k = 0; k < 4; k++) q.w[k] = fa_pack2(v[2 * k] * mul, v[2 * k + 1] * mul);
#endif
    return q;
}

// Loads the logits of keys j0 .. j0+VEC-1 (j0 a multiple of VEC): -inf where not visible (those are not read).
// 16-byte access when the rows allow it (p.vec) and the piece is all visible, else element by element.
// UNIT: the last stride is 1 (p.unit), so an element is x[j], without a 64-bit multiply per element.
template <bool UNIT>
FA_DEVICE void fa_softmax_load(const fa_softmax_params& p, const fa_softmax_row& row, fa_i64 j0, float (&v)[FA_SOFTMAX_VEC])
{
    if (p.vec && j0 >= row.lo && j0 + FA_SOFTMAX_VEC - 1 <= row.hi)
    {
        fa_softmax_unpack(*reinterpret_cast<const fa_softmax_v4*>(row.x + j0), v);
#pragma unroll
        for (int e = 0; e < FA_SOFTMAX_VEC; e++)
            v[e] = fa_softmax_kept(p, row, j0 + e) ? fa_softmax_logit(p, v[e]) : fa_neg_inf();
    }
    else
    {
#pragma unroll
        for (int e = 0; e < FA_SOFTMAX_VEC; e++)
        {
            const fa_i64 j = j0 + e;
            v[e] = (j >= row.lo && j <= row.hi && fa_softmax_kept(p, row, j))
                ? fa_softmax_logit(p, fa_to_float(row.x[UNIT ? j : j * row.xs])) : fa_neg_inf();
        }
    }
}

// Stores v[e] * mul to keys j0 .. j0+VEC-1 that exist (j < Sk).
template <bool UNIT>
FA_DEVICE void fa_softmax_store(const fa_softmax_params& p, const fa_softmax_row& row, fa_i64 j0, const float (&v)[FA_SOFTMAX_VEC], float mul)
{
    if (p.vec && j0 + FA_SOFTMAX_VEC <= p.sk)
    {
        *reinterpret_cast<fa_softmax_v4*>(row.y + j0) = fa_softmax_pack(v, mul);
    }
    else
    {
#pragma unroll
        for (int e = 0; e < FA_SOFTMAX_VEC; e++)
        {
            const fa_i64 j = j0 + e;
            if (j < p.sk) row.y[UNIT ? j : j * row.ys] = fa_from_float(v[e] * mul);
        }
    }
}

// Zeros for keys j0 .. j0+VEC-1 that exist.
template <bool UNIT>
FA_DEVICE void fa_softmax_store_zero(const fa_softmax_params& p, const fa_softmax_row& row, fa_i64 j0)
{
    float z[FA_SOFTMAX_VEC];
#pragma unroll
    for (int e = 0; e < FA_SOFTMAX_VEC; e++) z[e] = 0.0f;
    fa_softmax_store<UNIT>(p, row, j0, z, 1.0f);
}

// ---- reductions over the THREADS threads of a row -----------------------------------------------------------
// THREADS = 32: one warp, shuffles only. THREADS > 32: the whole CTA; red holds one partial per warp. The leading
// barrier keeps a warp from overwriting red while another still reads the previous reduction's partials.

template <int THREADS> FA_DEVICE float fa_softmax_row_max(float v, float* red)
{
    v = fa_group_max<(THREADS < 32 ? THREADS : 32)>(v);
    if constexpr (THREADS > 32)
    {
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        __syncthreads();
        if (lane == 0) red[warp] = v;
        __syncthreads();
        v = fa_warp_max(lane < THREADS / 32 ? red[lane] : fa_neg_inf());
    }
    return v;
}

template <int THREADS> FA_DEVICE float fa_softmax_row_sum(float v, float* red)
{
    v = fa_group_sum<(THREADS < 32 ? THREADS : 32)>(v);
    if constexpr (THREADS > 32)
    {
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        __syncthreads();
        if (lane == 0) red[warp] = v;
        __syncthreads();
        v = fa_warp_sum(lane < THREADS / 32 ? red[lane] : 0.0f);
    }
    return v;
}

// ---- tuned: values in registers (THREADS threads per row, ROWS rows per CTA) ---------------------------------
// Thread t of a row holds keys ((c * THREADS + t) * VEC + e) for chunk c < PER_THREAD / VEC and e < VEC, so the
// threads of a warp touch consecutive 16-byte pieces. Requires Sk <= THREADS * PER_THREAD and unit last strides
// (p.unit == 1); the host sends other tensors to the online kernel. THREADS < 32 puts several rows in a warp, so the
// per-row work (locating the row, the two reductions) is shared out instead of paid by 32 lanes for each row. The
// shuffles name the whole warp (and a CTA row's reductions use barriers), so every thread runs every iteration and
// both reductions, whether its row exists and whether it sees a key; threads of a row past the end touch no memory.
// A row that sees no key gets zeros.

template <int THREADS, int ROWS>
FA_DEVICE void fa_softmax_registers(const fa_softmax_params& p, float* red)
{
    constexpr int VEC = FA_SOFTMAX_VEC;
    constexpr int CHUNKS = FA_SOFTMAX_PER_THREAD / VEC;
    static_assert(THREADS % 32 == 0 || (THREADS < 32 && 32 % THREADS == 0), "a row's threads are whole warps or lie in one");
    const int t = threadIdx.x % THREADS;
    // Chunks that hold keys for some thread of the row (the same for every row): shorter rows skip the rest
    // instead of predicating their loads, exponentials and stores element by element.
    const int live = (p.sk + THREADS * VEC - 1) / (THREADS * VEC);
    for (fa_i64 r0 = (fa_i64)blockIdx.x * ROWS; r0 < p.rows; r0 += (fa_i64)gridDim.x * ROWS)
    {
        const fa_i64 r = r0 + threadIdx.x / THREADS;
        const bool exists = r < p.rows;
        fa_softmax_row row;
        if (exists)
        {
            row = fa_softmax_locate(p, r);
        }
        else
        {
            row.x = p.x;
            row.y = p.y;
            row.xs = p.xs3;
            row.ys = p.ys3;
            row.lo = 1;                // nothing visible: the loads below read nothing
            row.hi = 0;
            row.keep = nullptr;
        }
        float v[CHUNKS][VEC];
        float m = fa_neg_inf();
#pragma unroll
        for (int c = 0; c < CHUNKS; c++)
        {
            if (c >= live) break;
            fa_softmax_load<true>(p, row, (fa_i64)(c * THREADS + t) * VEC, v[c]);
#pragma unroll
            for (int e = 0; e < VEC; e++) m = fa_max(m, v[c][e]);
        }
        m = fa_softmax_row_max<THREADS>(m, red);
        const bool seen = m != fa_neg_inf();
        float s = 0.0f;
#pragma unroll
        for (int c = 0; c < CHUNKS; c++)
        {
            if (c >= live) break;
#pragma unroll
            for (int e = 0; e < VEC; e++)
            {
                v[c][e] = seen ? fa_exp2((v[c][e] - m) * p.log2_scale) : 0.0f;   // -inf -> 0
                s += v[c][e];
            }
        }
        s = fa_softmax_row_sum<THREADS>(s, red);
        if (!exists) continue;
        const float inv = seen ? 1.0f / s : 0.0f;
#pragma unroll
        for (int c = 0; c < CHUNKS; c++)
        {
            if (c >= live) break;
            fa_softmax_store<true>(p, row, (fa_i64)(c * THREADS + t) * VEC, v[c], inv);
        }
    }
}

// Sk <= 256: 8 threads per row, 16 rows per CTA.
extern "C" __global__ void __launch_bounds__(128) FA_NAME(fa_softmax_group)(const fa_softmax_params p)
{
    fa_softmax_registers<8, 16>(p, nullptr);
}

// Sk <= 1024: one warp per row, 4 rows per CTA.
extern "C" __global__ void __launch_bounds__(128) FA_NAME(fa_softmax_warp)(const fa_softmax_params p)
{
    fa_softmax_registers<32, 4>(p, nullptr);
}

// Sk <= 8192: one 256-thread CTA per row.
extern "C" __global__ void __launch_bounds__(256) FA_NAME(fa_softmax_block)(const fa_softmax_params p)
{
    __shared__ float red[8];
    fa_softmax_registers<256, 1>(p, red);
}

// ---- tuned: any Sk, online (max, sum) ---------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(256) FA_NAME(fa_softmax_online)(const fa_softmax_params p)
{
    constexpr int THREADS = 256, VEC = FA_SOFTMAX_VEC;
    __shared__ float red[THREADS / 32];
    const int t = threadIdx.x;
    for (fa_i64 r = blockIdx.x; r < p.rows; r += gridDim.x)
    {
        const fa_softmax_row row = fa_softmax_locate(p, r);
        // Pass 1 over the chunks that hold visible keys: running max m and sum s of exp2((v - m) * log2_scale).
        const fa_i64 first = row.lo - row.lo % VEC;
        float m = fa_neg_inf(), s = 0.0f;
        for (fa_i64 j0 = first + (fa_i64)t * VEC; j0 <= row.hi; j0 += (fa_i64)THREADS * VEC)
        {
            float v[VEC];
            fa_softmax_load<false>(p, row, j0, v);
            float cm = m;
#pragma unroll
            for (int e = 0; e < VEC; e++) cm = fa_max(cm, v[e]);
            if (cm == fa_neg_inf()) continue;            // nothing visible yet: (-inf) - (-inf) must not happen
            float cs = 0.0f;
#pragma unroll
            for (int e = 0; e < VEC; e++) cs += fa_exp2((v[e] - cm) * p.log2_scale);
            s = s * fa_exp2((m - cm) * p.log2_scale) + cs;  // m = -inf: s is 0 and the factor 0
            m = cm;
        }
        const float rowMax = fa_softmax_row_max<THREADS>(m, red);
        if (rowMax == fa_neg_inf())
        {
            for (fa_i64 j0 = (fa_i64)t * VEC; j0 < p.sk; j0 += (fa_i64)THREADS * VEC) fa_softmax_store_zero<false>(p, row, j0);
            continue;
        }
        s = m == fa_neg_inf() ? 0.0f : s * fa_exp2((m - rowMax) * p.log2_scale);
        const float inv = 1.0f / fa_softmax_row_sum<THREADS>(s, red);
        // Pass 2 over the whole row: zeros outside [lo, hi] without reading, probabilities inside.
        for (fa_i64 j0 = (fa_i64)t * VEC; j0 < p.sk; j0 += (fa_i64)THREADS * VEC)
        {
            if (j0 + VEC - 1 < row.lo || j0 > row.hi)
            {
                fa_softmax_store_zero<false>(p, row, j0);
                continue;
            }
            float v[VEC];
            fa_softmax_load<false>(p, row, j0, v);
#pragma unroll
            for (int e = 0; e < VEC; e++) v[e] = fa_exp2((v[e] - rowMax) * p.log2_scale);
            fa_softmax_store<false>(p, row, j0, v, inv);
        }
    }
}

// ---- plain SIMT reference version ---------------------------------------------------------------------------------
// One warp per row (4 per 128-thread CTA), scalar loads through the strides, three passes over global memory.

extern "C" __global__ void __launch_bounds__(128) FA_NAME(fa_softmax_plain)(const fa_softmax_params p)
{
    const int lane = threadIdx.x % 32;
    for (fa_i64 r = (fa_i64)blockIdx.x * 4 + threadIdx.x / 32; r < p.rows; r += (fa_i64)gridDim.x * 4)
    {
        const fa_softmax_row row = fa_softmax_locate(p, r);
        float m = fa_neg_inf();
        for (fa_i64 j = row.lo + lane; j <= row.hi; j += 32)
            if (fa_softmax_kept(p, row, j)) m = fa_max(m, fa_softmax_logit(p, fa_to_float(row.x[j * row.xs])));
        m = fa_warp_max(m);
        if (m == fa_neg_inf())
        {
            for (fa_i64 j = lane; j < p.sk; j += 32) row.y[j * row.ys] = fa_from_float(0.0f);
            continue;
        }
        float s = 0.0f;
        for (fa_i64 j = row.lo + lane; j <= row.hi; j += 32)
            if (fa_softmax_kept(p, row, j)) s += fa_exp2((fa_softmax_logit(p, fa_to_float(row.x[j * row.xs])) - m) * p.log2_scale);
        const float inv = 1.0f / fa_warp_sum(s);
        for (fa_i64 j = lane; j < p.sk; j += 32)
        {
            float out = 0.0f;
            if (j >= row.lo && j <= row.hi && fa_softmax_kept(p, row, j))
                out = fa_exp2((fa_softmax_logit(p, fa_to_float(row.x[j * row.xs])) - m) * p.log2_scale) * inv;
            row.y[j * row.ys] = fa_from_float(out);
        }
    }
}
