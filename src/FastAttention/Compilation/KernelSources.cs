// The CUDA sources of native/kernels, embedded in the assembly; a program is the prelude followed by one kernel file.
using System.Collections.Concurrent;
using System.Reflection;

namespace FastAttention.Compilation;

/// <summary>Reads the embedded kernel sources and assembles NVRTC programs from them.</summary>
internal static class KernelSources
{
    /// <summary>The prelude prepended (as text) to every program: inline-PTX helpers and element-type macros.</summary>
    public const string PreludeFile = "common.cuh";

    private const string ResourcePrefix = "FastAttention.Kernels.";
    private static readonly ConcurrentDictionary<string, string> s_text = new(StringComparer.Ordinal);

    /// <summary>File names of every embedded kernel source, prelude included.</summary>
    public static IReadOnlyList<string> Files { get; } = typeof(KernelSources).Assembly.GetManifestResourceNames()
        .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal))
        .Select(n => n[ResourcePrefix.Length..])
        .Order(StringComparer.Ordinal)
        .ToArray();

    /// <summary>The text of an embedded file.</summary>
    /// <exception cref="FileNotFoundException">No kernel source has that name.</exception>
    public static string Read(string fileName) => s_text.GetOrAdd(fileName, static name =>
    {
        using Stream? stream = typeof(KernelSources).Assembly.GetManifestResourceStream(ResourcePrefix + name)
            ?? throw new FileNotFoundException(
                $"No kernel source '{name}' is embedded; the sources are {string.Join(", ", Files)}.", name);
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    });

    /// <summary>
    /// The full program for <paramref name="specialization"/>: the prelude, then the kernel source, each
    /// introduced by a <c>#line</c> directive so compiler messages name the right file and line.
    /// </summary>
    /// <exception cref="FileNotFoundException">The specialisation names a source that is not embedded.</exception>
    public static string Program(KernelSpecialization specialization)
    {
        string source = specialization.InlineSource ?? Read(specialization.SourceFile);
        return $"#line 1 \"{PreludeFile}\"\n{Read(PreludeFile)}\n#line 1 \"{specialization.SourceFile}\"\n{source}";
    }
}
