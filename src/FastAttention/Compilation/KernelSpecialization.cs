// One compilable variant of a kernel family: a source file from native/kernels, its -D macros and the kernels it defines.
using System.Text;

namespace FastAttention.Compilation;

/// <summary>Element type a kernel is specialised for (the <c>FA_DTYPE</c> macro of the prelude).</summary>
public enum KernelElementType
{
    /// <summary>fp32 (<c>FA_DTYPE=0</c>, kernel suffix <c>f32</c>).</summary>
    Float32 = 0,
    /// <summary>fp16 (<c>FA_DTYPE=1</c>, kernel suffix <c>f16</c>).</summary>
    Float16 = 1,
    /// <summary>bf16 (<c>FA_DTYPE=2</c>, kernel suffix <c>bf16</c>).</summary>
    BFloat16 = 2,
}

/// <summary>Helpers for <see cref="KernelElementType"/>.</summary>
public static class KernelElementTypes
{
    /// <summary>The suffix kernel names carry: f32, f16, bf16.</summary>
    public static string Suffix(this KernelElementType type) => type switch
    {
        KernelElementType.Float32 => "f32",
        KernelElementType.Float16 => "f16",
        _ => "bf16",
    };

    /// <summary>The kernel element type for <typeparamref name="T"/> (float, Half or BFloat16).</summary>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is another type.</exception>
    public static KernelElementType Of<T>() =>
        typeof(T) == typeof(float) ? KernelElementType.Float32
        : typeof(T) == typeof(Half) ? KernelElementType.Float16
        : typeof(T) == typeof(BFloat16) ? KernelElementType.BFloat16
        : throw new ArgumentException($"Element type {typeof(T).Name} is not supported; use float, Half or BFloat16.", nameof(T));
}

/// <summary>
/// A kernel program to compile: a source file of <c>native/kernels</c> (or inline source), the
/// <c>-D</c> macros that specialise it, and the <c>extern "C"</c> kernels it then defines. Two
/// specialisations are equal when their source, macros and kernel names are.
/// </summary>
public sealed class KernelSpecialization : IEquatable<KernelSpecialization>
{
    private readonly SortedDictionary<string, string> _defines;

    /// <summary>A specialisation of an embedded source file.</summary>
    /// <param name="name">Short unique name (used in cache file names and reports), e.g. <c>utility_f16</c>.</param>
    /// <param name="sourceFile">File name under <c>native/kernels</c>, e.g. <c>utility.cu</c>.</param>
    /// <param name="kernelNames">The kernels the program defines with these macros.</param>
    /// <param name="defines">Macros passed as <c>-DNAME=VALUE</c>.</param>
    /// <exception cref="ArgumentException">The name, file or a kernel name is empty, there is no kernel, or a macro name is not an identifier.</exception>
    public KernelSpecialization(string name, string sourceFile, IReadOnlyList<string> kernelNames,
        IReadOnlyDictionary<string, string>? defines = null)
        : this(name, sourceFile, null, kernelNames, defines)
    {
    }

    private KernelSpecialization(string name, string sourceFile, string? inlineSource, IReadOnlyList<string> kernelNames,
        IReadOnlyDictionary<string, string>? defines)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentException.ThrowIfNullOrWhiteSpace(sourceFile);
        ArgumentNullException.ThrowIfNull(kernelNames);
        if (kernelNames.Count == 0 || kernelNames.Any(string.IsNullOrWhiteSpace))
        {
            throw new ArgumentException("At least one kernel name is needed, and none may be empty.", nameof(kernelNames));
        }
        _defines = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in defines ?? new Dictionary<string, string>())
        {
            if (key.Length == 0 || !(char.IsAsciiLetter(key[0]) || key[0] == '_') || !key.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
            {
                throw new ArgumentException($"Macro name '{key}' is not a C identifier.", nameof(defines));
            }
            _defines[key] = value;
        }
        Name = name;
        SourceFile = sourceFile;
        InlineSource = inlineSource;
        KernelNames = kernelNames.ToArray();
    }

    /// <summary>
    /// A specialisation of source text given here instead of an embedded file (the prelude is still
    /// prepended); for custom kernels and tests.
    /// </summary>
    /// <exception cref="ArgumentException">An argument is empty or invalid (see the constructor).</exception>
    public static KernelSpecialization FromSource(string name, string source, IReadOnlyList<string> kernelNames,
        IReadOnlyDictionary<string, string>? defines = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new KernelSpecialization(name, name + ".cu", source, kernelNames, defines);
    }

    /// <summary>Short unique name, e.g. <c>utility_f16</c>.</summary>
    public string Name { get; }

    /// <summary>The source file name (under <c>native/kernels</c> unless the source is inline).</summary>
    public string SourceFile { get; }

    /// <summary>Inline source text, or null for an embedded file.</summary>
    internal string? InlineSource { get; }

    /// <summary>The <c>extern "C"</c> kernels the program defines.</summary>
    public IReadOnlyList<string> KernelNames { get; }

    /// <summary>The macros, ordered by name.</summary>
    public IReadOnlyDictionary<string, string> Defines => _defines;

    /// <summary>The macros as NVRTC options (<c>-DNAME=VALUE</c>), ordered by name.</summary>
    public IEnumerable<string> DefineOptions => _defines.Select(d => $"-D{d.Key}={d.Value}");

    /// <inheritdoc/>
    public bool Equals(KernelSpecialization? other) => other is not null && Identity == other.Identity;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as KernelSpecialization);

    /// <inheritdoc/>
    public override int GetHashCode() => Identity.GetHashCode(StringComparison.Ordinal);

    /// <summary>"utility_f16 (utility.cu -DFA_DTYPE=1)".</summary>
    public override string ToString() => $"{Name} ({SourceFile}{string.Concat(DefineOptions.Select(d => " " + d))})";

    private string Identity
    {
        get
        {
            var sb = new StringBuilder();
            sb.Append(Name).Append('\n').Append(SourceFile).Append('\n').Append(InlineSource).Append('\n');
            foreach (string d in DefineOptions) sb.Append(d).Append('\n');
            foreach (string k in KernelNames) sb.Append(k).Append('\n');
            return sb.ToString();
        }
    }
}
