// module.cu — helper kernels of the GPU multi-head attention module (src/FastAttention/Gpu/CudaMultiHeadAttention.cs),
// one element type per program (-DFA_DTYPE=0/1/2).
//
// Projection biases are folded into the cuBLAS GEMM instead of being added afterwards: fa_bias_rows writes the bias
// into every row of the GEMM's output, then the GEMM runs with beta = 1 (C = x·Wᵀ + 1·C). The two ways move the same
// bytes (write C + read C), but this one rounds to fp16/bf16 once, inside the GEMM's fp32 epilogue, where a separate
// bias-add kernel would round the GEMM result and then the sum.

#if !defined(FA_DTYPE)
#error "module.cu needs -DFA_DTYPE=0 (fp32), 1 (fp16) or 2 (bf16)"
#endif

// Row r of `rows` output rows lies in group g = r / rowsPerGroup (one matrix of a strided-batched GEMM) at
// out + g * groupStride + (r - g * rowsPerGroup) * ldOut; for one plain matrix rowsPerGroup = rows and groupStride is unused.
// out[row(r) + c] = bias[c] for r in [0, rows), c in [0, cols).   bias: [cols]   out: rows of ldOut >= cols elements
// Columns run over x (threads, coalesced), rows over y; both are grid-stride loops, so any grid is correct (the host
// caps grid.y at 65535). Offsets are 64-bit.
extern "C" __global__ void __launch_bounds__(256) FA_NAME(fa_bias_rows)(
    const fa_elem* __restrict__ bias, fa_elem* __restrict__ out, fa_i64 rows, int cols, fa_i64 ldOut,
    fa_i64 rowsPerGroup, fa_i64 groupStride)
{
    for (fa_i64 r = blockIdx.y; r < rows; r += gridDim.y)
    {
        const fa_i64 g = r / rowsPerGroup;
        fa_elem* row = out + g * groupStride + (r - g * rowsPerGroup) * ldOut;
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
            row[c] = bias[c];
    }
}
