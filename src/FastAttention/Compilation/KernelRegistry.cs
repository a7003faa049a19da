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

    /// <summary>
    /// The fused row softmax (<c>softmax.cu</c>) over one element type: the plain SIMT kernel
    /// <c>fa_softmax_plain_*</c> and the tuned <c>fa_softmax_warp_*</c> (rows up to 1024), <c>fa_softmax_block_*</c>
    /// (up to 8192) and <c>fa_softmax_online_*</c> (any length). Used by <see cref="Gpu.CudaSoftmax"/>.
    /// </summary>
    public static KernelSpecialization Softmax(KernelElementType type)
    {
        string s = type.Suffix();
        return new KernelSpecialization($"softmax_{s}", "softmax.cu",
            [$"fa_softmax_plain_{s}", $"fa_softmax_warp_{s}", $"fa_softmax_block_{s}", $"fa_softmax_online_{s}"],
            new Dictionary<string, string> { ["FA_DTYPE"] = ((int)type).ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }

    /// <summary>Every specialisation, in a stable order.</summary>
    public static IReadOnlyList<KernelSpecialization> All { get; } =
    [
        .. s_allTypes.Select(Utility),
        PreludeSmoke(KernelElementType.Float16),
        PreludeSmoke(KernelElementType.BFloat16),
        .. s_allTypes.Select(Softmax),
    ];
}
