// utility.cu — small real kernels the runtime uses and tests: fill, copy and y = a·x + y over one element
// type (-DFA_DTYPE=0/1/2), fp32 arithmetic. Grid-stride loops with 64-bit indices: any grid size is correct.

// The prelude (prepended before this file) defines fa_elem only when FA_DTYPE is set, so a default here would come
// too late: require the macro instead.
#if !defined(FA_DTYPE)
#error "utility.cu needs -DFA_DTYPE=0 (fp32), 1 (fp16) or 2 (bf16)"
#endif

// out[i] = value for i in [0, n).   out: [n]
extern "C" __global__ void __launch_bounds__(256) FA_NAME(fa_fill)(fa_elem* __restrict__ out, float value, fa_i64 n)
{
    const fa_elem v = fa_from_float(value);
    for (fa_i64 i = (fa_i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (fa_i64)gridDim.x * blockDim.x)
        out[i] = v;
}

// out[i] = in[i] for i in [0, n).   in, out: [n], not overlapping
extern "C" __global__ void __launch_bounds__(256) FA_NAME(fa_copy)(const fa_elem* __restrict__ in, fa_elem* __restrict__ out, fa_i64 n)
{
    for (fa_i64 i = (fa_i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (fa_i64)gridDim.x * blockDim.x)
        out[i] = in[i];
}

// y[i] = alpha * x[i] + y[i] for i in [0, n), computed in fp32 and rounded once.   x, y: [n]
extern "C" __global__ void __launch_bounds__(256) FA_NAME(fa_axpy)(float alpha, const fa_elem* __restrict__ x, fa_elem* __restrict__ y, fa_i64 n)
{
    for (fa_i64 i = (fa_i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (fa_i64)gridDim.x * blockDim.x)
        y[i] = fa_from_float(alpha * fa_to_float(x[i]) + fa_to_float(y[i]));
}
