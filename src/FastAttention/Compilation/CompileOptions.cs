// Options for every program a KernelCompiler builds, turned into the exact NVRTC option list (part of the cache key).
using System.Globalization;

namespace FastAttention.Compilation;

/// <summary>Compiler settings shared by every kernel a <see cref="KernelCompiler"/> builds.</summary>
public sealed record CompileOptions
{
    /// <summary>Default settings: C++17, no fast math, no line info.</summary>
    public static CompileOptions Default { get; } = new();

    /// <summary>Emit line information (<c>-lineinfo</c>) so Nsight Compute maps SASS to source lines.</summary>
    public bool LineInfo { get; init; }

    /// <summary>Use fast, less accurate math (<c>--use_fast_math</c>).</summary>
    public bool FastMath { get; init; }

    /// <summary>Register cap per thread (<c>--maxrregcount</c>), or null for the compiler's choice.</summary>
    public int? MaxRegisters { get; init; }

    /// <summary>Further NVRTC options, passed last, as given.</summary>
    public IReadOnlyList<string> ExtraOptions { get; init; } = [];

    /// <summary>
    /// The full NVRTC option list for one program: architecture, language standard, the ptxas report
    /// (CUBIN only), these settings, then the specialisation's macros.
    /// </summary>
    internal IReadOnlyList<string> ToNvrtcOptions(CompileTarget target, KernelSpecialization specialization)
    {
        var options = new List<string> { target.ArchitectureOption, "--std=c++17" };
        if (target.Kind == KernelImageKind.Cubin)
        {
            options.Add("--ptxas-options=-v");
        }
        if (LineInfo) options.Add("-lineinfo");
        if (FastMath) options.Add("--use_fast_math");
        if (MaxRegisters is int r) options.Add("--maxrregcount=" + r.ToString(CultureInfo.InvariantCulture));
        options.AddRange(ExtraOptions);
        options.AddRange(specialization.DefineOptions);
        return options;
    }
}
