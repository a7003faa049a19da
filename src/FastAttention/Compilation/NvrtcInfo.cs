// Which NVRTC was loaded: its version, the architectures it compiles for, and the file it came from.
using FastAttention.Interop;
using FastAttention.Runtime;

namespace FastAttention.Compilation;

/// <summary>The NVRTC library in use.</summary>
public sealed class NvrtcInfo
{
    private static readonly Lazy<NvrtcInfo> s_current = new(Query);

    private NvrtcInfo(Version version, IReadOnlyList<ComputeCapability> architectures, string libraryPath)
    {
        Version = version;
        SupportedArchitectures = architectures;
        LibraryPath = libraryPath;
    }

    /// <summary>NVRTC's version, e.g. 11.8 or 12.4.</summary>
    public Version Version { get; }

    /// <summary>Architectures NVRTC can compile for (nvrtcGetSupportedArchs), oldest first.</summary>
    public IReadOnlyList<ComputeCapability> SupportedArchitectures { get; }

    /// <summary>The library file (or soname) that was loaded.</summary>
    public string LibraryPath { get; }

    /// <summary>The loaded NVRTC (loads it on first use).</summary>
    /// <exception cref="DllNotFoundException">NVRTC cannot be loaded (the message lists what was tried and how to fix it).</exception>
    /// <exception cref="NvrtcCompilationException">NVRTC loaded but failed to report its version or architectures.</exception>
    public static NvrtcInfo Current => s_current.Value;

    /// <summary>Like <see cref="Current"/>, but returns false with the reason instead of throwing.</summary>
    public static bool TryGetCurrent(out NvrtcInfo? info, out string reason)
    {
        try
        {
            info = Current;
            reason = "";
            return true;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or NvrtcCompilationException)
        {
            info = null;
            reason = e.Message;
            return false;
        }
    }

    /// <summary>"NVRTC 11.8 (libnvrtc.so.11.2)".</summary>
    public override string ToString() => $"NVRTC {Version.Major}.{Version.Minor} ({LibraryPath})";

    private static unsafe NvrtcInfo Query()
    {
        string path = NativeLibraries.Get(NativeLibraryId.Nvrtc).LoadedFrom ?? "";
        NativeLibraries.Require(NativeLibraryId.Nvrtc);
        NativeStatus.Check(Nvrtc.nvrtcVersion(out int major, out int minor));
        NativeStatus.Check(Nvrtc.nvrtcGetNumSupportedArchs(out int count));
        var numbers = new int[count];
        fixed (int* p = numbers)
        {
            NativeStatus.Check(Nvrtc.nvrtcGetSupportedArchs(p));
        }
        ComputeCapability[] architectures = numbers.Order().Select(ComputeCapability.FromNumber).ToArray();
        return new NvrtcInfo(new Version(major, minor), architectures, path);
    }
}
