// Zeroed, pinned storage for KV-cache pools, backed by transparent huge pages on Linux where allowed.
using System.Runtime.InteropServices;

namespace FastAttention.Cpu.Caching;

/// <summary>
/// Allocates the key and value pools of the CPU caches. Decode streams these pools once per token;
/// with 4 KiB pages every 4 KiB of a head's rows costs a page walk and stops the hardware prefetchers,
/// which do not cross page boundaries. On Linux the pool's huge-page-aligned interior is advised
/// <c>MADV_HUGEPAGE</c> right after allocation, so memory fresh from the OS faults in as huge pages when
/// appends first touch it (with the kernel's transparent huge pages "always" or "madvise"; measured at
/// B=8, H=8, D=128, 4k context: decode +15% contiguous, +14% paged). Memory the GC hands out again may
/// already be backed by 4 KiB pages; the kernel may collapse those later. The pool is not touched here,
/// so its RAM is still taken only as tokens arrive. Elsewhere, or when the advice is refused, it is
/// ordinary memory.
/// </summary>
internal static unsafe partial class CachePool
{
    private const int MadvHugePage = 14;

    /// <summary>The kernel's transparent huge page size (2 MiB on x86-64; larger on some arm64 kernels).</summary>
    internal static readonly nint HugePageBytes = ReadHugePageSize();

    /// <summary>A zeroed pinned array of <paramref name="length"/> elements; see the class remarks.</summary>
    public static T[] Allocate<T>(int length) where T : unmanaged
    {
        var array = GC.AllocateArray<T>(length, pinned: true);
        fixed (T* p = array)
        {
            AdviseHugePages(p, (long)length * sizeof(T));
        }
        return array;
    }

    /// <summary>
    /// Advises the huge-page-aligned interior of <c>[p, p + bytes)</c>; returns whether the kernel accepted
    /// the advice (false off Linux, for ranges under two huge pages, or when the call is unavailable).
    /// </summary>
    internal static bool AdviseHugePages(void* p, long bytes)
    {
        if (!OperatingSystem.IsLinux() || bytes < 2L * HugePageBytes) return false;
        nint start = ((nint)p + HugePageBytes - 1) & ~(HugePageBytes - 1);
        nint end = ((nint)p + (nint)bytes) & ~(HugePageBytes - 1);
        if (end <= start) return false;
        try
        {
            return Madvise(start, (nuint)(end - start), MadvHugePage) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    private static nint ReadHugePageSize()
    {
        const nint fallback = 2 << 20;
        try
        {
            string path = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size";
            return OperatingSystem.IsLinux() && File.Exists(path) && long.TryParse(File.ReadAllText(path).Trim(), out long size)
                && size >= 4096 && (size & (size - 1)) == 0 ? (nint)size : fallback;
        }
        catch (IOException)
        {
            return fallback;
        }
        catch (UnauthorizedAccessException)
        {
            return fallback;
        }
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);
}
