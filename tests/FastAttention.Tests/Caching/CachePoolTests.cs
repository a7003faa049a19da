// CachePool: cache pools come back zeroed whatever their size; on Linux with transparent huge pages built
// in, the huge-page-aligned interior of a large pool is advised MADV_HUGEPAGE (the kernel marks that range
// "hg" in /proc/self/smaps); small ranges are never advised.

using System.Globalization;
using FastAttention.Cpu.Caching;

namespace FastAttention.Tests.Caching;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed unsafe class CachePoolTests
{
    private static bool KernelHasHugePages =>
        OperatingSystem.IsLinux() && File.Exists("/sys/kernel/mm/transparent_hugepage/enabled");

    [TestCase(1)]
    [TestCase(1000)]
    [TestCase(3 << 20)]
    public void Allocate_IsZeroedAndSized(int length)
    {
        float[] pool = CachePool.Allocate<float>(length);
        Assert.That(pool, Has.Length.EqualTo(length));
        Assert.That(pool.AsSpan().IndexOfAnyExcept(0f), Is.EqualTo(-1));
        ushort[] halves = CachePool.Allocate<ushort>(length);
        Assert.That(halves.AsSpan().IndexOfAnyExcept((ushort)0), Is.EqualTo(-1));
    }

    [Test]
    public void Allocate_LargePool_InteriorIsMarkedForHugePages()
    {
        if (!KernelHasHugePages) Assert.Ignore("No transparent huge pages on this system.");
        long bytes = 4 * CachePool.HugePageBytes;
        byte[] pool = CachePool.Allocate<byte>(checked((int)bytes));
        fixed (byte* p = pool)
        {
            nint inside = ((nint)p + CachePool.HugePageBytes - 1) & ~(CachePool.HugePageBytes - 1);
            Assert.That(VmFlags(inside), Does.Contain("hg"), "the aligned interior should carry the MADV_HUGEPAGE flag");
        }
    }

    [Test]
    public void AdviseHugePages_LargeRange_AcceptedWhereTheKernelHasThem()
    {
        var buffer = GC.AllocateUninitializedArray<byte>(checked((int)(4 * CachePool.HugePageBytes)), pinned: true);
        fixed (byte* p = buffer)
        {
            Assert.That(CachePool.AdviseHugePages(p, buffer.Length), Is.EqualTo(KernelHasHugePages));
        }
    }

    [Test]
    public void AdviseHugePages_SmallRange_IsNotAdvised()
    {
        var buffer = GC.AllocateUninitializedArray<byte>(checked((int)(2 * CachePool.HugePageBytes)), pinned: true);
        fixed (byte* p = buffer)
        {
            Assert.That(CachePool.AdviseHugePages(p, buffer.Length - 1), Is.False);
        }
    }

    /// <summary>The VmFlags line of the mapping that contains <paramref name="address"/>, from /proc/self/smaps.</summary>
    private static string VmFlags(nint address)
    {
        bool inside = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-');
            int space = line.IndexOf(' ');
            if (dash > 0 && space > dash && ulong.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, null, out ulong from)
                && ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, null, out ulong to))
            {
                inside = (ulong)address >= from && (ulong)address < to;
            }
            else if (inside && line.StartsWith("VmFlags:", StringComparison.Ordinal))
            {
                return line;
            }
        }
        return "";
    }
}
