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

    /// <summary>Every specialisation, in a stable order.</summary>
    public static IReadOnlyList<KernelSpecialization> All { get; } =
    [
        .. s_allTypes.Select(Utility),
        PreludeSmoke(KernelElementType.Float16),
        PreludeSmoke(KernelElementType.BFloat16),
        .. s_allTypes.Select(Module),
    ];
}
