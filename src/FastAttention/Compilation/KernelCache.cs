// In-memory and on-disk cache of compiled modules. Disk entries carry a header with the key and a SHA-256 of
// the payload, are written atomically, and are recompiled when truncated or garbled.
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;

namespace FastAttention.Compilation;

/// <summary>
/// Caches compiled modules in memory (per instance) and, when it has a directory, on disk (shared by processes).
/// Thread-safe: concurrent requests for the same key compile once; the others wait for that result.
/// </summary>
public sealed class KernelCache
{
    /// <summary>Environment variable that overrides the disk cache directory; <c>off</c> disables the disk cache.</summary>
    public const string DirectoryVariable = "FASTATTN_KERNEL_CACHE";

    private const string FileExtension = ".fakc";
    private const int FormatVersion = 1;
    private static ReadOnlySpan<byte> Magic => "FAKCACHE"u8;
    private const int HeaderSize = 8 + 4 + 4 + 32 + 32 + 4 + 4;

    private readonly ConcurrentDictionary<string, Lazy<CompiledModule>> _memory = new(StringComparer.Ordinal);
    private long _memoryHits, _diskHits, _misses, _corrupt, _writeFailures;

    /// <summary>A cache with the given disk directory, or memory-only when it is null.</summary>
    /// <param name="directory">Disk cache directory (created when needed), or null for memory only.</param>
    /// <exception cref="ArgumentException"><paramref name="directory"/> is not a valid path.</exception>
    public KernelCache(string? directory)
    {
        Directory = string.IsNullOrWhiteSpace(directory) ? null : Path.GetFullPath(directory);
    }

    /// <summary>A cache in <see cref="DefaultDirectory"/> (memory-only when that is null).</summary>
    public static KernelCache CreateDefault() => new(DefaultDirectory(Environment.GetEnvironmentVariable));

    /// <summary>The disk directory, or null when the cache is memory-only.</summary>
    public string? Directory { get; }

    /// <summary>Requests answered from memory.</summary>
    public long MemoryHits => Interlocked.Read(ref _memoryHits);

    /// <summary>Requests answered from a valid disk entry.</summary>
    public long DiskHits => Interlocked.Read(ref _diskHits);

    /// <summary>Requests that had to compile.</summary>
    public long Misses => Interlocked.Read(ref _misses);

    /// <summary>Disk entries found corrupt (bad header, wrong key, wrong length, checksum mismatch); each was replaced.</summary>
    public long CorruptEntries => Interlocked.Read(ref _corrupt);

    /// <summary>Disk writes that failed (e.g. a read-only directory); the compiled module was still returned.</summary>
    public long WriteFailures => Interlocked.Read(ref _writeFailures);

    /// <summary>
    /// The default disk directory: <c>$FASTATTN_KERNEL_CACHE</c> (null when it is <c>off</c>), else
    /// <c>$XDG_CACHE_HOME/fastattention/kernels</c>, else <c>~/.cache/fastattention/kernels</c>
    /// (<c>%LOCALAPPDATA%\FastAttention\kernels</c> on Windows).
    /// </summary>
    /// <param name="getEnvironment">Reads an environment variable.</param>
    public static string? DefaultDirectory(Func<string, string?> getEnvironment)
    {
        ArgumentNullException.ThrowIfNull(getEnvironment);
        string? configured = getEnvironment(DirectoryVariable);
        if (!string.IsNullOrWhiteSpace(configured))
        {
            return configured.Trim().Equals("off", StringComparison.OrdinalIgnoreCase) ? null : configured.Trim();
        }
        if (OperatingSystem.IsWindows())
        {
            return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "FastAttention", "kernels");
        }
        string? xdg = getEnvironment("XDG_CACHE_HOME");
        string home = getEnvironment("HOME") ?? Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        string root = !string.IsNullOrWhiteSpace(xdg) ? xdg : Path.Combine(home, ".cache");
        return Path.Combine(root, "fastattention", "kernels");
    }

    /// <summary>Drops the in-memory entries (disk entries stay).</summary>
    public void ClearMemory() => _memory.Clear();

    /// <summary>The path of the disk entry for a key, or null when memory-only.</summary>
    internal string? PathFor(string name, CompileTarget target, string key) =>
        Directory is null ? null : Path.Combine(Directory, $"{name}-{target.Architecture.SmName}-{target.Kind.ToString().ToLowerInvariant()}-{key[..16]}{FileExtension}");

    /// <summary>
    /// Returns the module for <paramref name="key"/>: from memory, else from disk, else from
    /// <paramref name="compile"/> (then stored in both). Only one caller compiles a given key at a time.
    /// </summary>
    internal CompiledModule GetOrCompile(KernelSpecialization specialization, CompileTarget target, string key,
        IReadOnlyList<string> options, Func<(byte[] Image, string Log)> compile)
    {
        var candidate = new Lazy<CompiledModule>(() => Produce(specialization, target, key, options, compile),
            LazyThreadSafetyMode.ExecutionAndPublication);
        var lazy = _memory.GetOrAdd(key, candidate);
        if (!ReferenceEquals(lazy, candidate))
        {
            Interlocked.Increment(ref _memoryHits);
        }
        try
        {
            return lazy.Value;
        }
        catch
        {
            // A failed compile is not cached: the next request tries again.
            _memory.TryRemove(new KeyValuePair<string, Lazy<CompiledModule>>(key, lazy));
            throw;
        }
    }

    private CompiledModule Produce(KernelSpecialization specialization, CompileTarget target, string key,
        IReadOnlyList<string> options, Func<(byte[] Image, string Log)> compile)
    {
        string? path = PathFor(specialization.Name, target, key);
        if (path is not null && TryRead(path, key, out byte[]? image, out string? log))
        {
            Interlocked.Increment(ref _diskHits);
            return new CompiledModule(specialization, target, image, log, options, key, CompiledModuleOrigin.DiskCache);
        }
        Interlocked.Increment(ref _misses);
        var (compiled, compileLog) = compile();
        if (path is not null)
        {
            TryWrite(path, key, target.Kind, compiled, compileLog);
        }
        return new CompiledModule(specialization, target, compiled, compileLog, options, key, CompiledModuleOrigin.Compiled);
    }

    private bool TryRead(string path, string key, out byte[] image, out string log)
    {
        image = [];
        log = "";
        byte[] file;
        try
        {
            if (!File.Exists(path)) return false;
            file = File.ReadAllBytes(path);
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
        if (!TryDecode(file, key, out image, out log))
        {
            Interlocked.Increment(ref _corrupt);
            try
            {
                File.Delete(path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The entry is rewritten after compiling; a delete failure changes nothing.
            }
            return false;
        }
        return true;
    }

    /// <summary>Checks the header, the key, the lengths and the payload checksum of a disk entry.</summary>
    internal static bool TryDecode(ReadOnlySpan<byte> file, string key, out byte[] image, out string log)
    {
        image = [];
        log = "";
        if (file.Length < HeaderSize || !file[..8].SequenceEqual(Magic)) return false;
        if (BinaryPrimitives.ReadInt32LittleEndian(file[8..]) != FormatVersion) return false;
        if (!file.Slice(16, 32).SequenceEqual(Convert.FromHexString(key))) return false;
        ReadOnlySpan<byte> checksum = file.Slice(48, 32);
        int imageLength = BinaryPrimitives.ReadInt32LittleEndian(file[80..]);
        int logLength = BinaryPrimitives.ReadInt32LittleEndian(file[84..]);
        if (imageLength <= 0 || logLength < 0 || (long)HeaderSize + imageLength + logLength != file.Length) return false;
        ReadOnlySpan<byte> payload = file[HeaderSize..];
        if (!SHA256.HashData(payload).AsSpan().SequenceEqual(checksum)) return false;
        image = payload[..imageLength].ToArray();
        log = Encoding.UTF8.GetString(payload[imageLength..]);
        return true;
    }

    /// <summary>The bytes of a disk entry.</summary>
    internal static byte[] Encode(string key, KernelImageKind kind, byte[] image, string log)
    {
        byte[] logBytes = Encoding.UTF8.GetBytes(log);
        var file = new byte[HeaderSize + image.Length + logBytes.Length];
        Magic.CopyTo(file);
        BinaryPrimitives.WriteInt32LittleEndian(file.AsSpan(8), FormatVersion);
        BinaryPrimitives.WriteInt32LittleEndian(file.AsSpan(12), (int)kind);
        Convert.FromHexString(key).CopyTo(file, 16);
        BinaryPrimitives.WriteInt32LittleEndian(file.AsSpan(80), image.Length);
        BinaryPrimitives.WriteInt32LittleEndian(file.AsSpan(84), logBytes.Length);
        image.CopyTo(file, HeaderSize);
        logBytes.CopyTo(file, HeaderSize + image.Length);
        SHA256.HashData(file.AsSpan(HeaderSize)).CopyTo(file, 48);
        return file;
    }

    private void TryWrite(string path, string key, KernelImageKind kind, byte[] image, string log)
    {
        string temporary = $"{path}.{Environment.ProcessId}.{Environment.CurrentManagedThreadId}.tmp";
        try
        {
            System.IO.Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllBytes(temporary, Encode(key, kind, image, log));
            File.Move(temporary, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Interlocked.Increment(ref _writeFailures);
            try
            {
                File.Delete(temporary);
            }
            catch (Exception cleanup) when (cleanup is IOException or UnauthorizedAccessException)
            {
                // Nothing more to do: the temporary name is unique and never read.
            }
        }
    }
}
