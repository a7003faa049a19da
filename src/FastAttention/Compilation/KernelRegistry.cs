// Every kernel specialisation the library can request. The compile-all test walks this list for sm_80 and sm_90;
// each new kernel family adds its variants here (and to the variant list in CMakeLists.txt).
namespace FastAttention.Compilation;

/// <summary>The kernel specialisations the library can ask NVRTC for.</summary>
public static class KernelRegistry
{
    private static readonly KernelElementType[] s_allTypes =
        [KernelElementType.Float32, KernelElementType.Float16, KernelElementType.BFloat16];

    /// <summary>Utility kernels (<c>utility.cu</c>): fill, copy and axpy over one element type.</summary>
    public static KernelSpecialization Utility(KernelElementType type)
    {
        string s = type.Suffix();
        return new KernelSpecialization($"utility_{s}", "utility.cu",
            [$"fa_fill_{s}", $"fa_copy_{s}", $"fa_axpy_{s}"],
            new Dictionary<string, string> { ["FA_DTYPE"] = ((int)type).ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }

    /// <summary>
    /// The prelude smoke kernel (<c>prelude_smoke.cu</c>): one warp runs every prelude helper — cp.async,
    /// ldmatrix (plain and transposed), mma.sync m16n8k16, conversions, warp reductions — on a 16x8x16 product.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="type"/> is <see cref="KernelElementType.Float32"/> (mma needs 16-bit inputs).</exception>
    public static KernelSpecialization PreludeSmoke(KernelElementType type)
    {
        if (type == KernelElementType.Float32)
        {
            throw new ArgumentException("The mma smoke kernel takes 16-bit inputs: Float16 or BFloat16.", nameof(type));
        }
        string s = type.Suffix();
        return new KernelSpecialization($"prelude_smoke_{s}", "prelude_smoke.cu", [$"fa_prelude_smoke_mma_{s}"],
            new Dictionary<string, string> { ["FA_DTYPE"] = ((int)type).ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }

    /// <summary>Multi-head attention module helpers (<c>module.cu</c>): <c>fa_bias_rows</c>, the bias broadcast the projections fold into their GEMM.</summary>
    public static KernelSpecialization Module(KernelElementType type)
    {
        string s = type.Suffix();
        return new KernelSpecialization($"module_{s}", "module.cu", [$"fa_bias_rows_{s}"],
            new Dictionary<string, string> { ["FA_DTYPE"] = ((int)type).ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }

    /// <summary>
    /// The tuned attention forward (<c>attention_fwd.cu</c>) for one head dim and a 16-bit type: one program with three
    /// kernels, <c>fa_fwd_hd{D}_{type}</c> (key/query lengths), <c>..._causal</c> (causal and/or sliding window) and
    /// <c>..._sparse</c> (block-sparse tile list), tiled by <see cref="Gpu.AttentionKernelTraits"/>.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="type"/> is Float32 (the tuned kernel uses fp16/bf16 tensor cores), or the head dim is not supported.</exception>
    public static KernelSpecialization AttentionForward(int headDim, KernelElementType type)
    {
        if (type == KernelElementType.Float32)
        {
            throw new ArgumentException("The tuned attention kernel takes Float16 or BFloat16; fp32 runs on the SIMT kernel.", nameof(type));
        }
        var t = Gpu.AttentionKernelTraits.For(headDim);
        string s = type.Suffix();
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        return new KernelSpecialization($"attention_fwd_hd{headDim}_{s}", "attention_fwd.cu",
            [AttentionForwardKernelName(headDim, type, Gpu.AttentionKernelMode.Dense),
             AttentionForwardKernelName(headDim, type, Gpu.AttentionKernelMode.Causal),
             AttentionForwardKernelName(headDim, type, Gpu.AttentionKernelMode.Sparse)],
            new Dictionary<string, string>
            {
                ["FA_DTYPE"] = ((int)type).ToString(inv),
                ["FA_HEAD_DIM"] = headDim.ToString(inv),
                ["FA_WARPS"] = t.Warps.ToString(inv),
                ["FA_BLOCK_N"] = t.BlockN.ToString(inv),
            });
    }

    /// <summary>Kernel name of the tuned forward for a head dim, type and mode, e.g. <c>fa_fwd_hd128_f16_causal</c>.</summary>
    internal static string AttentionForwardKernelName(int headDim, KernelElementType type, Gpu.AttentionKernelMode mode) =>
        $"fa_fwd_hd{headDim}_{type.Suffix()}" + mode switch
        {
            Gpu.AttentionKernelMode.Causal => "_causal",
            Gpu.AttentionKernelMode.Sparse => "_sparse",
            _ => "",
        };

    /// <summary>The plain SIMT attention forward (<c>attention_fwd_simt.cu</c>): every type (the fp32 path), every mask, any strides.</summary>
    public static KernelSpecialization AttentionForwardSimt(KernelElementType type)
    {
        string s = type.Suffix();
        return new KernelSpecialization($"attention_fwd_simt_{s}", "attention_fwd_simt.cu", [$"fa_fwd_simt_{s}"],
            new Dictionary<string, string> { ["FA_DTYPE"] = ((int)type).ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }

    /// <summary>Head dimensions the paged decode and KV append kernels are specialised for.</summary>
    public static IReadOnlyList<int> DecodeHeadDims { get; } = [64, 128, 256];

    /// <summary>
    /// Split-KV decode over a paged or contiguous KV cache (<c>paged_decode.cu</c>): the tuned kernel
    /// <c>fa_paged_decode_hd{D}_{t}</c>, the plain SIMT kernel <c>fa_paged_decode_simt_hd{D}_{t}</c> and the
    /// split combine kernel <c>fa_decode_combine_hd{D}_{t}</c>.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="headDim"/> is not in <see cref="DecodeHeadDims"/>.</exception>
    public static KernelSpecialization PagedDecode(KernelElementType type, int headDim)
    {
        RequireDecodeHeadDim(headDim);
        string s = type.Suffix();
        return new KernelSpecialization($"paged_decode_hd{headDim}_{s}", "paged_decode.cu",
            [$"fa_paged_decode_hd{headDim}_{s}", $"fa_paged_decode_simt_hd{headDim}_{s}", $"fa_decode_combine_hd{headDim}_{s}"],
            DecodeDefines(type, headDim));
    }

    /// <summary>
    /// KV cache append (<c>kv_append.cu</c>): <c>fa_kv_append_hd{D}_{t}</c> writes a batch's new tokens through the
    /// block tables, <c>fa_kv_copy_pages_hd{D}_{t}</c> performs the copy-on-write page copies before it.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="headDim"/> is not in <see cref="DecodeHeadDims"/>.</exception>
    public static KernelSpecialization KvAppend(KernelElementType type, int headDim)
    {
        RequireDecodeHeadDim(headDim);
        string s = type.Suffix();
        return new KernelSpecialization($"kv_append_hd{headDim}_{s}", "kv_append.cu",
            [$"fa_kv_append_hd{headDim}_{s}", $"fa_kv_copy_pages_hd{headDim}_{s}"], DecodeDefines(type, headDim));
    }

    private static void RequireDecodeHeadDim(int headDim)
    {
        if (!DecodeHeadDims.Contains(headDim))
        {
            throw new ArgumentException(
                $"head dim {headDim} has no GPU decode/append kernel; supported: {string.Join(", ", DecodeHeadDims)}.", nameof(headDim));
        }
    }

    private static Dictionary<string, string> DecodeDefines(KernelElementType type, int headDim) => new()
    {
        ["FA_DTYPE"] = ((int)type).ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["FA_HEAD_DIM"] = headDim.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>
    /// The fused row softmax (<c>softmax.cu</c>) over one element type: the plain SIMT kernel
    /// <c>fa_softmax_plain_*</c> and the tuned <c>fa_softmax_group_*</c> (rows up to 256), <c>fa_softmax_warp_*</c> (up to 1024), <c>fa_softmax_block_*</c>
    /// (up to 8192) and <c>fa_softmax_online_*</c> (any length). Used by <see cref="Gpu.CudaSoftmax"/>.
    /// </summary>
    public static KernelSpecialization Softmax(KernelElementType type)
    {
        string s = type.Suffix();
        return new KernelSpecialization($"softmax_{s}", "softmax.cu",
            [$"fa_softmax_plain_{s}", $"fa_softmax_group_{s}", $"fa_softmax_warp_{s}", $"fa_softmax_block_{s}", $"fa_softmax_online_{s}"],
            new Dictionary<string, string> { ["FA_DTYPE"] = ((int)type).ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }

    /// <summary>Every specialisation, in a stable order.</summary>
    public static IReadOnlyList<KernelSpecialization> All { get; } =
    [
        .. s_allTypes.Select(Utility),
        PreludeSmoke(KernelElementType.Float16),
        PreludeSmoke(KernelElementType.BFloat16),
        .. s_allTypes.Select(Module),
        .. s_allTypes.Select(AttentionForwardSimt),
        .. from d in Gpu.AttentionKernelTraits.SupportedHeadDims
           from t in new[] { KernelElementType.Float16, KernelElementType.BFloat16 }
           select AttentionForward(d, t),
        .. s_allTypes.SelectMany(t => DecodeHeadDims.Select(d => PagedDecode(t, d))),
        .. s_allTypes.SelectMany(t => DecodeHeadDims.Select(d => KvAppend(t, d))),
        .. s_allTypes.Select(Softmax),
    ];
}
