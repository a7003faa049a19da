// prelude_smoke.cu — one warp exercises every prelude helper on a 16x8x16 product, so each helper is
// compile-checked for every architecture and checked for correctness against the CPU on a GPU:
// cp.async (plain and zero-fill) into shared memory, ldmatrix x4 / x2 / x2.trans, mma.sync m16n8k16,
// fp16/bf16 pack/unpack and scalar conversions, 4-lane and 32-lane shuffle reductions, exp2.
// -DFA_DTYPE=1 (fp16) or 2 (bf16).

#if !defined(FA_DTYPE) || FA_DTYPE == FA_DTYPE_F32
#error "prelude_smoke.cu needs a 16-bit element type: -DFA_DTYPE=1 (fp16) or -DFA_DTYPE=2 (bf16)"
#endif

// Launch with one block of 32 threads. All matrices row-major.
//   a:        [16, 16] (m, k)
//   b_nk:     [8, 16]  (n, k) — B transposed, the "col" operand as ldmatrix reads it
//   b_kn:     [16, 8]  (k, n) — B itself, read with ldmatrix.trans
//   d_nk:     [16, 8]  fp32, A·B from b_nk
//   d_kn:     [16, 8]  fp32, A·B from b_kn (must equal d_nk)
//   d_round:  [16, 8]  fp32, d_nk rounded to the element type and back (pack2/unpack2 for columns 2t, 2t+1 of
//                      rows 0-7, scalar conversions for rows 8-15)
//   row_sum:  [16]     fp32, sum over each row of d_nk (4-lane reduction)
//   stats:    [2]      fp32, { max of d_nk, sum of exp2(d_nk - max) } (32-lane reductions)
extern "C" __global__ void __launch_bounds__(32) FA_NAME(fa_prelude_smoke_mma)(
    const fa_elem* __restrict__ a, const fa_elem* __restrict__ b_nk, const fa_elem* __restrict__ b_kn,
    float* __restrict__ d_nk, float* __restrict__ d_kn, float* __restrict__ d_round,
    float* __restrict__ row_sum, float* __restrict__ stats)
{
    __shared__ alignas(16) fa_elem sa[16 * 16];
    __shared__ alignas(16) fa_elem sb_nk[8 * 16];
    __shared__ alignas(16) fa_elem sb_kn[16 * 8];
    const int lane = threadIdx.x;

    // 16 bytes = 8 elements per copy: A takes one copy per lane, each B half the warp.
    fa_cp_async_16(fa_smem_addr(sa + lane * 8), a + lane * 8);
    if (lane < 16)
        fa_cp_async_16(fa_smem_addr(sb_nk + lane * 8), b_nk + lane * 8);
    else
        fa_cp_async_16_zfill(fa_smem_addr(sb_kn + (lane - 16) * 8), b_kn + (lane - 16) * 8, true);
    fa_cp_async_commit();
    fa_cp_async_wait<0>();
    __syncthreads();

    // A: tiles (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
    fa_u32 ra[4];
    fa_ldmatrix_x4(ra, fa_smem_addr(sa + (lane % 16) * 16 + (lane / 16) * 8));
    // B from [n][k]: tiles (n 0-7, k 0-7), (n 0-7, k 8-15); lanes 16-31 repeat valid addresses.
    fa_u32 rb[2];
    fa_ldmatrix_x2(rb, fa_smem_addr(sb_nk + (lane % 8) * 16 + ((lane / 8) % 2) * 8));
    // B from [k][n], transposed on load: tiles (k 0-7), (k 8-15).
    fa_u32 rbt[2];
    fa_ldmatrix_x2_trans(rbt, fa_smem_addr(sb_kn + (lane % 16) * 8));

    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    float acc_t[4] = {0.f, 0.f, 0.f, 0.f};
    fa_mma_m16n8k16(acc, ra, rb);
    fa_mma_m16n8k16(acc_t, ra, rbt);

    const int g = lane / 4, t = lane % 4;
    const int top = g * 8 + 2 * t, bottom = (g + 8) * 8 + 2 * t;
    d_nk[top] = acc[0];
    d_nk[top + 1] = acc[1];
    d_nk[bottom] = acc[2];
    d_nk[bottom + 1] = acc[3];
    d_kn[top] = acc_t[0];
    d_kn[top + 1] = acc_t[1];
    d_kn[bottom] = acc_t[2];
    d_kn[bottom + 1] = acc_t[3];

    float lo, hi;
    fa_unpack2(fa_pack2(acc[0], acc[1]), lo, hi);
    d_round[top] = lo;
    d_round[top + 1] = hi;
    d_round[bottom] = fa_to_float(fa_from_float(acc[2]));
    d_round[bottom + 1] = fa_to_float(fa_from_float(acc[3]));

    // Each row of the 16x8 result lives in the 4 lanes of one group, 2 values per lane.
    const float sum_top = fa_group_sum<4>(acc[0] + acc[1]);
    const float sum_bottom = fa_group_sum<4>(acc[2] + acc[3]);
    if (t == 0)
    {
        row_sum[g] = sum_top;
        row_sum[g + 8] = sum_bottom;
    }

    const float m = fa_warp_max(fa_max(fa_max(acc[0], acc[1]), fa_max(acc[2], acc[3])));
    const float e = fa_warp_sum(fa_exp2(acc[0] - m) + fa_exp2(acc[1] - m) + fa_exp2(acc[2] - m) + fa_exp2(acc[3] - m));
    if (lane == 0)
    {
        stats[0] = m;
        stats[1] = e;
    }
}
