// CachePool: cache pools come back zeroed whatever their size, and on Linux with transparent huge
// pages built in the 2 MiB-aligned interior of a large pool is advised MADV_HUGEPAGE; small ranges never are.

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
    public void AdviseHugePages_LargeRange_AcceptedWhereTheKernelHasThem()
    {
        var buffer = GC.AllocateUninitializedArray<byte>(8 << 20, pinned: true);
        fixed (byte* p = buffer)
        {
            Assert.That(CachePool.AdviseHugePages(p, buffer.Length), Is.EqualTo(KernelHasHugePages));
        }
    }

    [Test]
    public void AdviseHugePages_SmallRange_IsNotAdvised()
    {
        var buffer = GC.AllocateUninitializedArray<byte>(3 << 20, pinned: true);
        fixed (byte* p = buffer)
        {
            Assert.That(CachePool.AdviseHugePages(p, buffer.Length), Is.False);
        }
    }
}
