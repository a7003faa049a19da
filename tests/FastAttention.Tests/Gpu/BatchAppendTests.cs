// CPU tests of the all-or-nothing batched append: exact page counts (copy-on-write included) against sequential
// per-sequence appends, exhaustion mid-batch leaving every table, length and refcount unchanged, argument errors.
using FastAttention.Caching;
using FastAttention.Gpu;
using FastAttention.Tests.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class BatchAppendTests
{
    [Test]
    public void PagesNeededIsExactlyWhatTheSequentialAppendsTake()
    {
        var rng = new Rng(11);
        for (int trial = 0; trial < 300; trial++)
        {
            var a = new PageAllocator(400, 1 << rng.Next(3, 5));
            var ids = new List<int> { a.CreateSequence() };
            for (int step = 0; step < 40; step++)
            {
                int op = rng.Next(0, 5);
                int s = ids[rng.Next(0, ids.Count - 1)];
                if (op == 0) ids.Add(a.Fork(s));
                else if (op == 1) a.Trim(s, rng.Next(0, a.Length(s)));
                else if (op == 2) ids.Add(a.CreateSequence());
                else if (a.PagesNeeded(s, 9) <= a.FreePages) a.Append(s, rng.Next(0, 9));
            }
            int[] batch = [.. ids.Where(_ => rng.NextBool(0.7))];
            int[] counts = [.. batch.Select(_ => rng.Next(0, 20))];
            long needed = BatchAppend.PagesNeeded(a, batch, counts);
            int free = a.FreePages;
            if (needed > free) continue;
            string before = CacheTestSupport.Snapshot(a);
            var placements = BatchAppend.Commit(a, batch, counts);
            Assert.That(free - a.FreePages, Is.EqualTo(needed), $"trial {trial}: pages taken vs predicted; before: {before}");
            for (int b = 0; b < batch.Length; b++)
            {
                Assert.That(placements[b].Count, Is.EqualTo(counts[b]));
                Assert.That(a.Length(batch[b]), Is.EqualTo(placements[b].Start + counts[b]));
            }
        }
    }

    [Test]
    public void AllSharersOfAPartialPageAppendingTakeOneCopyFewerThanTheirPerSequenceCounts()
    {
        var a = new PageAllocator(6, 16);
        int s0 = a.CreateSequence();
        a.Append(s0, 20);                 // pages: 2, the second partially filled (4 of 16)
        int s1 = a.Fork(s0);              // both share both pages
        Assert.That(a.PagesNeeded(s0, 1) + a.PagesNeeded(s1, 1), Is.EqualTo(2), "each alone would copy");
        Assert.That(BatchAppend.PagesNeeded(a, [s0, s1], [1, 1]), Is.EqualTo(1), "the second writes in place");
        var placements = BatchAppend.Commit(a, [s0, s1], [1, 1]);
        Assert.That(placements[0].Copy, Is.Not.Null);
        Assert.That(placements[1].Copy, Is.Null);
        Assert.That(a.FreePages, Is.EqualTo(3));
    }

    [Test]
    public void ExhaustionMidBatchChangesNothing()
    {
        var a = new PageAllocator(10, 8);
        int s0 = a.CreateSequence(), s1 = a.CreateSequence(), s2 = a.CreateSequence();
        a.Append(s0, 12);
        int s3 = a.Fork(s0);
        a.Append(s1, 3);
        // Free: 10 - 2 - 1 = 7. The batch needs s0: 1 copy + 1 page, s1: 2 pages (3 -> 17 tokens), s2: 3 pages, s3: 1 page
        // (the last sharer writes in place, then grows) = 8 > 7; the first three entries alone take 7 and fit.
        int[] batch = [s0, s1, s2, s3];
        int[] counts = [8, 14, 20, 5];
        Assert.That(BatchAppend.PagesNeeded(a, batch, counts), Is.EqualTo(8));
        string before = CacheTestSupport.Snapshot(a);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => BatchAppend.Commit(a, batch, counts))!;
        Assert.That(e.Message, Does.Contain("needs 8 free pages").And.Contain("has 7 of 10").And.Contain("Nothing was appended"));
        Assert.That(CacheTestSupport.Snapshot(a), Is.EqualTo(before));
        Assert.That(BatchAppend.Commit(a, batch[..3], counts[..3]).Length, Is.EqualTo(3), "without the last entry it fits");
    }

    [Test]
    public void BadBatchesAreRejectedBeforeAnyChange()
    {
        var a = new PageAllocator(10, 8);
        int s0 = a.CreateSequence(), s1 = a.CreateSequence();
        a.Append(s0, 5);
        string before = CacheTestSupport.Snapshot(a);
        var dup = Assert.Throws<ArgumentException>(() => BatchAppend.Commit(a, [s0, s1, s0], [1, 1, 1]))!;
        Assert.That(dup.ParamName, Is.EqualTo("sequences"));
        Assert.That(dup.Message, Does.Contain("sequences[2]").And.Contain("twice"));
        var dead = Assert.Throws<ArgumentException>(() => BatchAppend.Commit(a, [s1, 42], [1, 1]))!;
        Assert.That(dead.Message, Does.Contain("sequences[1] = 42"));
        var negative = Assert.Throws<ArgumentException>(() => BatchAppend.Commit(a, [s0, s1], [1, -1]))!;
        Assert.That(negative.ParamName, Is.EqualTo("counts"));
        Assert.Throws<ArgumentException>(() => BatchAppend.Commit(a, [s0, s1], [1]));
        Assert.Throws<ArgumentException>(() => BatchAppend.Commit(a, [s0], [int.MaxValue]));
        Assert.That(CacheTestSupport.Snapshot(a), Is.EqualTo(before));
    }
}
