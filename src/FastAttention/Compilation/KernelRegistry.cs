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

    /// <summary>Every specialisation, in a stable order.</summary>
    public static IReadOnlyList<KernelSpecialization> All { get; } =
    [
        .. s_allTypes.Select(Utility),
        PreludeSmoke(KernelElementType.Float16),
        PreludeSmoke(KernelElementType.BFloat16),
        .. s_allTypes.SelectMany(t => DecodeHeadDims.Select(d => PagedDecode(t, d))),
        .. s_allTypes.SelectMany(t => DecodeHeadDims.Select(d => KvAppend(t, d))),
    ];
}
