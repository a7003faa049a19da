// kv_append.cu — writes new tokens' keys and values into a KV cache pool (vLLM's reshape_and_cache), and the
// copy-on-write page copies the host allocator scheduled. Specialised by -DFA_DTYPE=0/1/2 and -DFA_HEAD_DIM=64/128/256.
//
// Pool layout (paged and contiguous caches alike): key/value row of KV head h, page p, slot s starts at element
//   h * pool_head_stride + p * pool_page_stride + s * D
// (paged: [Hkv, pages, pageSize, D], head stride pages*pageSize*D; contiguous: [B, Hkv, S, D] seen as pages of
// consecutive slots). All offsets are 64-bit: Hkv*pages*pageSize*D passes 2^31 in real pools. Rows are moved in
// 16-byte vectors, so every row start (pool, sources) is 16-byte aligned: the host checks the source strides.

#if !defined(FA_DTYPE) || !defined(FA_HEAD_DIM)
#error "kv_append.cu needs -DFA_DTYPE=0/1/2 and -DFA_HEAD_DIM=64/128/256"
#endif
#if FA_HEAD_DIM != 64 && FA_HEAD_DIM != 128 && FA_HEAD_DIM != 256
#error "FA_HEAD_DIM must be 64, 128 or 256"
#endif

#define FA_D FA_HEAD_DIM
#define FA_VEC (16 / (int)sizeof(fa_elem))        // elements per 16-byte vector
#define FA_CHUNKS (FA_D / FA_VEC)                 // 16-byte vectors per head row
#define FA_APPEND_THREADS 128
#define FA_HD_NAME1(base, d) base##d
#define FA_HD_NAME(base, d) FA_HD_NAME1(base, d)
#define FA_KERNEL(base) FA_NAME(FA_HD_NAME(base, FA_HEAD_DIM))

struct alignas(16) fa_vec16 { fa_u32 x, y, z, w; };

// Mirrors FastAttention.Gpu.KvAppendParams (C# sequential layout: 8-byte fields first, then 4-byte fields).
struct fa_kv_append_params
{
    const fa_elem* k_src;            // new keys: ragged [N, Hkv, D] or batched [B, n, Hkv, D]; D contiguous
    const fa_elem* v_src;            // new values, same shape and strides as k_src
    fa_elem* k_pool;                 // key pool (layout above)
    fa_elem* v_pool;                 // value pool
    const int* block_tables;         // [entries, table_stride] page ids of each batch entry's sequence
    const int* entry_token_start;    // [entries + 1] entry b's new tokens are [start[b], start[b + 1])
    const int* entry_position;       // [entries] sequence position of entry b's first new token
    fa_i64 src_entry_stride;         // batched sources: elements between batch entries (ragged: unused)
    fa_i64 src_token_stride;         // elements between tokens
    fa_i64 src_head_stride;          // elements between KV heads
    fa_i64 pool_head_stride;         // elements between KV heads in the pool
    fa_i64 pool_page_stride;         // elements between pages in the pool (pageSize * D)
    int entries;                     // batch entries B
    int tokens;                      // total new tokens N (grid.x)
    int kv_heads;                    // Hkv
    int table_stride;                // ints per block-table row
    int page_shift;                  // log2(pageSize)
    int ragged;                      // 1: source token t is row t; 0: row (b, t - start[b])
};

static_assert(sizeof(fa_kv_append_params) == 120, "fa_kv_append_params must match FastAttention.Gpu.KvAppendParams");

// One block per new token: finds its batch entry (last b with start[b] <= t), maps its position through the
// entry's block table to (page, slot), then copies Hkv rows of K and of V in 16-byte vectors.
// grid: (N), block: (128)
extern "C" __global__ void __launch_bounds__(FA_APPEND_THREADS) FA_KERNEL(fa_kv_append_hd)(const fa_kv_append_params p)
{
    const int t = blockIdx.x;
    int lo = 0, hi = p.entries - 1;
    while (lo < hi)
    {
        int mid = (lo + hi + 1) >> 1;
        if (p.entry_token_start[mid] <= t) lo = mid; else hi = mid - 1;
    }
    const int b = lo;
    const int local = t - p.entry_token_start[b];
    const int position = p.entry_position[b] + local;
    const int page = p.block_tables[(fa_i64)b * p.table_stride + (position >> p.page_shift)];
    const fa_i64 dst_row = (fa_i64)page * p.pool_page_stride + (fa_i64)(position & ((1 << p.page_shift) - 1)) * FA_D;
    const fa_i64 src_row = p.ragged ? (fa_i64)t * p.src_token_stride
                                    : (fa_i64)b * p.src_entry_stride + (fa_i64)local * p.src_token_stride;
    for (int i = threadIdx.x; i < p.kv_heads * FA_CHUNKS; i += FA_APPEND_THREADS)
    {
        const int h = i / FA_CHUNKS, c = i % FA_CHUNKS;
        const fa_i64 src = src_row + (fa_i64)h * p.src_head_stride + c * FA_VEC;
        const fa_i64 dst = dst_row + (fa_i64)h * p.pool_head_stride + c * FA_VEC;
        const fa_vec16 kv = *reinterpret_cast<const fa_vec16*>(p.k_src + src);
        const fa_vec16 vv = *reinterpret_cast<const fa_vec16*>(p.v_src + src);
        *reinterpret_cast<fa_vec16*>(p.k_pool + dst) = kv;
        *reinterpret_cast<fa_vec16*>(p.v_pool + dst) = vv;
    }
}

// Mirrors FastAttention.Gpu.KvCopyParams.
struct fa_kv_copy_params
{
    fa_elem* k_pool;
    fa_elem* v_pool;
    const int* copies;               // [count, 3]: source page, destination page, filled slots
    fa_i64 pool_head_stride;
    fa_i64 pool_page_stride;
    int count;
};

static_assert(sizeof(fa_kv_copy_params) == 48, "fa_kv_copy_params must match FastAttention.Gpu.KvCopyParams");

// Copy-on-write: for each scheduled copy and KV head, slots [0, filled) of the source page go to the destination
// page (a page's slots of one head are contiguous, so that is filled*D consecutive elements). Runs on the stream
// before fa_kv_append, which then writes the new tokens into the private copy.
// grid: (count, Hkv), block: (128)
extern "C" __global__ void __launch_bounds__(FA_APPEND_THREADS) FA_KERNEL(fa_kv_copy_pages_hd)(const fa_kv_copy_params p)
{
    const int* c = p.copies + 3 * (fa_i64)blockIdx.x;
    const int src_page = c[0], dst_page = c[1], filled = c[2];
    const fa_i64 head = (fa_i64)blockIdx.y * p.pool_head_stride;
    const fa_i64 src = head + (fa_i64)src_page * p.pool_page_stride;
    const fa_i64 dst = head + (fa_i64)dst_page * p.pool_page_stride;
    for (int i = threadIdx.x; i < filled * FA_CHUNKS; i += FA_APPEND_THREADS)
    {
        const fa_i64 e = (fa_i64)i * FA_VEC;
        const fa_vec16 kv = *reinterpret_cast<const fa_vec16*>(p.k_pool + src + e);
        const fa_vec16 vv = *reinterpret_cast<const fa_vec16*>(p.v_pool + src + e);
        *reinterpret_cast<fa_vec16*>(p.k_pool + dst + e) = kv;
        *reinterpret_cast<fa_vec16*>(p.v_pool + dst + e) = vv;
    }
}
