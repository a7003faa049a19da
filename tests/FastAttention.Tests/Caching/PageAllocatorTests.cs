// PageAllocator: block tables, reference counts, copy-on-write fork, atomic appends, and a randomized
// property test that models page contents to prove no shared page is ever written.

using FastAttention.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Caching;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class PageAllocatorTests
{
    private static int[] Table(PageAllocator a, int seq) => a.BlockTable(seq).ToArray();

    [Test]
    public void NewAllocatorHasEveryPageFree()
    {
        var a = new PageAllocator(5, 16);
        Assert.Multiple(() =>
        {
            Assert.That(a.PageCount, Is.EqualTo(5));
            Assert.That(a.PageSize, Is.EqualTo(16));
            Assert.That(a.FreePages, Is.EqualTo(5));
            Assert.That(a.Sequences, Is.Empty);
            for (int p = 0; p < 5; p++) Assert.That(a.RefCount(p), Is.Zero);
        });
    }

    [TestCase(0, 16, "pageCount")]
    [TestCase(-1, 16, "pageCount")]
    [TestCase(4, 0, "pageSize")]
    [TestCase(4, -8, "pageSize")]
    public void ConstructorRejectsNonPositiveSizes(int pageCount, int pageSize, string param)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => _ = new PageAllocator(pageCount, pageSize))!;
        Assert.That(ex.ParamName, Is.EqualTo(param));
    }

    [Test]
    public void CreateGivesDistinctEmptySequences()
    {
        var a = new PageAllocator(4, 8);
        int s0 = a.CreateSequence(), s1 = a.CreateSequence(), s2 = a.CreateSequence();
        Assert.Multiple(() =>
        {
            Assert.That(new[] { s0, s1, s2 }, Is.Unique);
            Assert.That(a.Sequences, Is.EquivalentTo(new[] { s0, s1, s2 }));
            Assert.That(a.Length(s1), Is.Zero);
            Assert.That(a.BlockTable(s1).Length, Is.Zero);
            Assert.That(a.FreePages, Is.EqualTo(4));
        });
        a.Free(s1);
        int s3 = a.CreateSequence();
        Assert.That(s3, Is.Not.EqualTo(s1), "ids are not reused while the allocator lives");
    }

    [Test]
    public void AppendAllocatesCeilLengthOverPageSizePages()
    {
        var a = new PageAllocator(10, 4);
        int s = a.CreateSequence();
        Assert.That(a.Append(s, 0), Is.EqualTo(new AppendPlacement(0, 0, null)));
        Assert.That(a.BlockTable(s).Length, Is.Zero, "appending 0 tokens takes no page");

        Assert.That(a.Append(s, 5), Is.EqualTo(new AppendPlacement(0, 5, null)));
        Assert.That((a.Length(s), a.BlockTable(s).Length, a.FreePages), Is.EqualTo((5, 2, 8)));

        Assert.That(a.Append(s, 3), Is.EqualTo(new AppendPlacement(5, 3, null)), "fills the partial page exactly");
        Assert.That((a.Length(s), a.BlockTable(s).Length, a.FreePages), Is.EqualTo((8, 2, 8)));

        Assert.That(a.Append(s, 1), Is.EqualTo(new AppendPlacement(8, 1, null)));
        Assert.That((a.Length(s), a.BlockTable(s).Length, a.FreePages), Is.EqualTo((9, 3, 7)));

        Assert.That(a.Append(s, 0), Is.EqualTo(new AppendPlacement(9, 0, null)));
        Assert.That((a.Length(s), a.BlockTable(s).Length), Is.EqualTo((9, 3)));

        var table = Table(a, s);
        Assert.That(table, Is.Unique);
        foreach (int p in table) Assert.That(a.RefCount(p), Is.EqualTo(1));
    }

    [Test]
    public void PagesNeededCountsNewPagesAndTheCopy()
    {
        var a = new PageAllocator(20, 4);
        int s = a.CreateSequence();
        Assert.Multiple(() =>
        {
            Assert.That(a.PagesNeeded(s, 0), Is.Zero);
            Assert.That(a.PagesNeeded(s, 1), Is.EqualTo(1));
            Assert.That(a.PagesNeeded(s, 4), Is.EqualTo(1));
            Assert.That(a.PagesNeeded(s, 5), Is.EqualTo(2));
        });
        a.Append(s, 6); // 2 pages, last has 2 slots
        Assert.Multiple(() =>
        {
            Assert.That(a.PagesNeeded(s, 0), Is.Zero);
            Assert.That(a.PagesNeeded(s, 2), Is.Zero, "fits the partial page");
            Assert.That(a.PagesNeeded(s, 3), Is.EqualTo(1));
            Assert.That(a.PagesNeeded(s, 10), Is.EqualTo(2));
            Assert.That(a.PagesNeeded(s, 11), Is.EqualTo(3));
        });
        int f = a.Fork(s);
        Assert.Multiple(() =>
        {
            Assert.That(a.PagesNeeded(f, 0), Is.Zero, "no copy without tokens");
            Assert.That(a.PagesNeeded(f, 1), Is.EqualTo(1), "copy of the shared partial page");
            Assert.That(a.PagesNeeded(f, 2), Is.EqualTo(1));
            Assert.That(a.PagesNeeded(f, 3), Is.EqualTo(2));
            Assert.That(a.PagesNeeded(s, 1), Is.EqualTo(1), "the original shares it too");
        });
        a.Append(s, 2); // s copies, fills its private page
        Assert.That(a.PagesNeeded(s, 1), Is.EqualTo(1));
        Assert.That(a.PagesNeeded(f, 1), Is.Zero, "f is now the only holder of the old page");
        Assert.Throws<ArgumentOutOfRangeException>(() => a.PagesNeeded(s, -1));
    }

    [Test]
    public void ForkSharesEveryPage()
    {
        var a = new PageAllocator(10, 4);
        int s = a.CreateSequence();
        a.Append(s, 10);
        int free = a.FreePages;
        int f = a.Fork(s);
        Assert.Multiple(() =>
        {
            Assert.That(a.Length(f), Is.EqualTo(10));
            Assert.That(Table(a, f), Is.EqualTo(Table(a, s)));
            Assert.That(a.FreePages, Is.EqualTo(free), "fork takes no page");
            foreach (int p in Table(a, s)) Assert.That(a.RefCount(p), Is.EqualTo(2));
        });
        int g = a.Fork(f);
        foreach (int p in Table(a, s)) Assert.That(a.RefCount(p), Is.EqualTo(3));
        a.Free(s);
        foreach (int p in Table(a, f)) Assert.That(a.RefCount(p), Is.EqualTo(2));
        Assert.That(a.FreePages, Is.EqualTo(free), "shared pages stay allocated");
        a.Free(f);
        a.Free(g);
        Assert.That(a.FreePages, Is.EqualTo(10));
        for (int p = 0; p < 10; p++) Assert.That(a.RefCount(p), Is.Zero);
    }

    [Test]
    public void ForkOfEmptySequenceSharesNothing()
    {
        var a = new PageAllocator(4, 4);
        int s = a.CreateSequence();
        int f = a.Fork(s);
        Assert.That(a.Append(f, 3).Copy, Is.Null);
        Assert.That(a.Append(s, 3).Copy, Is.Null);
        Assert.That(Table(a, f), Is.Not.EqualTo(Table(a, s)));
    }

    [Test]
    public void AppendToForkWithPartialLastPageCopiesIt()
    {
        var a = new PageAllocator(10, 4);
        int s = a.CreateSequence();
        a.Append(s, 6); // pages [p0, p1], p1 holds 2 slots
        var original = Table(a, s);
        int f = a.Fork(s);
        int free = a.FreePages;

        var placement = a.Append(f, 1);
        var fork = Table(a, f);
        Assert.Multiple(() =>
        {
            Assert.That(placement.Start, Is.EqualTo(6));
            Assert.That(placement.Count, Is.EqualTo(1));
            Assert.That(placement.Copy, Is.Not.Null);
            Assert.That(placement.Copy!.Value.Source, Is.EqualTo(original[1]));
            Assert.That(placement.Copy!.Value.Destination, Is.EqualTo(fork[1]));
            Assert.That(placement.Copy!.Value.Slots, Is.EqualTo(2));
            Assert.That(fork[0], Is.EqualTo(original[0]), "full pages stay shared");
            Assert.That(fork[1], Is.Not.EqualTo(original[1]));
            Assert.That(original, Does.Not.Contain(fork[1]));
            Assert.That(Table(a, s), Is.EqualTo(original), "the original's table is unchanged");
            Assert.That(a.Length(s), Is.EqualTo(6));
            Assert.That(a.Length(f), Is.EqualTo(7));
            Assert.That(a.RefCount(original[0]), Is.EqualTo(2));
            Assert.That(a.RefCount(original[1]), Is.EqualTo(1));
            Assert.That(a.RefCount(fork[1]), Is.EqualTo(1));
            Assert.That(a.FreePages, Is.EqualTo(free - 1));
        });

        // The original is now the only holder of its partial page: it appends in place.
        var again = a.Append(s, 1);
        Assert.That(again, Is.EqualTo(new AppendPlacement(6, 1, null)));
        Assert.That(Table(a, s), Is.EqualTo(original));
        // And the fork owns its page: no second copy.
        Assert.That(a.Append(f, 1).Copy, Is.Null);
    }

    [Test]
    public void OriginalAppendingFirstCopiesAndTheForkThenWritesInPlace()
    {
        var a = new PageAllocator(10, 8);
        int s = a.CreateSequence();
        a.Append(s, 13);
        var before = Table(a, s);
        int f = a.Fork(s);
        var copy = a.Append(s, 3).Copy;
        Assert.That(copy, Is.EqualTo(new PageCopy(before[1], Table(a, s)[1], 5)));
        Assert.That(Table(a, f), Is.EqualTo(before), "the fork's table is unchanged");
        Assert.That(a.Append(f, 3).Copy, Is.Null);
    }

    [Test]
    public void ThreeWayForkCopiesForEachWriterButTheLast()
    {
        var a = new PageAllocator(10, 4);
        int s = a.CreateSequence();
        a.Append(s, 3);
        int f = a.Fork(s), g = a.Fork(s);
        int shared = Table(a, s)[0];
        Assert.That(a.RefCount(shared), Is.EqualTo(3));
        Assert.That(a.Append(f, 1).Copy, Is.EqualTo(new PageCopy(shared, Table(a, f)[0], 3)));
        Assert.That(a.RefCount(shared), Is.EqualTo(2));
        Assert.That(a.Append(g, 5).Copy, Is.EqualTo(new PageCopy(shared, Table(a, g)[0], 3)));
        Assert.That(a.RefCount(shared), Is.EqualTo(1));
        Assert.That(a.Append(s, 1).Copy, Is.Null);
        Assert.That(Table(a, s), Is.EqualTo(new[] { shared }));
        Assert.That(new[] { Table(a, s)[0], Table(a, f)[0], Table(a, g)[0] }, Is.Unique);
    }

    [Test]
    public void ForkWithFullLastPageNeverCopies()
    {
        var a = new PageAllocator(10, 4);
        int s = a.CreateSequence();
        a.Append(s, 8);
        int f = a.Fork(s);
        var placement = a.Append(f, 1);
        Assert.That(placement.Copy, Is.Null);
        Assert.That(Table(a, f)[..2], Is.EqualTo(Table(a, s)));
        Assert.That(a.Append(s, 1).Copy, Is.Null);
        Assert.That(Table(a, f)[2], Is.Not.EqualTo(Table(a, s)[2]));
    }

    [Test]
    public void ForkAppendingZeroTokensDoesNotCopy()
    {
        var a = new PageAllocator(10, 4);
        int s = a.CreateSequence();
        a.Append(s, 2);
        int f = a.Fork(s);
        Assert.That(a.Append(f, 0), Is.EqualTo(new AppendPlacement(2, 0, null)));
        Assert.That(Table(a, f), Is.EqualTo(Table(a, s)));
    }

    [Test]
    public void TrimReleasesPagesPastTheEnd()
    {
        var a = new PageAllocator(10, 4);
        int s = a.CreateSequence();
        a.Append(s, 11); // 3 pages
        var table = Table(a, s);
        a.Trim(s, 11);
        Assert.That(Table(a, s), Is.EqualTo(table), "trim to the same length changes nothing");
        a.Trim(s, 5);
        Assert.Multiple(() =>
        {
            Assert.That(a.Length(s), Is.EqualTo(5));
            Assert.That(Table(a, s), Is.EqualTo(table[..2]));
            Assert.That(a.RefCount(table[2]), Is.Zero);
            Assert.That(a.FreePages, Is.EqualTo(8));
        });
        a.Trim(s, 4);
        Assert.That(Table(a, s), Is.EqualTo(table[..1]));
        Assert.That(a.Append(s, 1), Is.EqualTo(new AppendPlacement(4, 1, null)));
        Assert.That(a.BlockTable(s).Length, Is.EqualTo(2));
        a.Trim(s, 0);
        Assert.That(a.BlockTable(s).Length, Is.Zero);
        Assert.That(a.FreePages, Is.EqualTo(10));
    }

    [TestCase(-1)]
    [TestCase(12)]
    public void TrimOutsideTheLengthThrowsAndChangesNothing(int length)
    {
        var a = new PageAllocator(10, 4);
        int s = a.CreateSequence();
        a.Append(s, 11);
        string before = CacheTestSupport.Snapshot(a);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => a.Trim(s, length))!;
        Assert.That(ex.ParamName, Is.EqualTo("length"));
        Assert.That(ex.Message, Does.Contain("11").And.Contain(length.ToString()));
        Assert.That(CacheTestSupport.Snapshot(a), Is.EqualTo(before));
    }

    [Test]
    public void TrimOfAForkKeepsSharedPagesAndTheNextAppendCopies()
    {
        var a = new PageAllocator(10, 4);
        int s = a.CreateSequence();
        a.Append(s, 8); // two full pages
        int f = a.Fork(s);
        a.Trim(f, 6);   // f's last page is shared and now partially used
        var shared = Table(a, s);
        Assert.That(Table(a, f), Is.EqualTo(shared));
        Assert.That(a.RefCount(shared[1]), Is.EqualTo(2));
        var placement = a.Append(f, 1);
        Assert.That(placement.Copy, Is.EqualTo(new PageCopy(shared[1], Table(a, f)[1], 2)), "writing slot 2 of a shared page must copy it");
        Assert.That(Table(a, s), Is.EqualTo(shared));

        a.Trim(f, 4);   // drops f's private page
        Assert.That(Table(a, f), Is.EqualTo(shared[..1]));
        Assert.That(a.RefCount(shared[1]), Is.EqualTo(1));
        Assert.That(a.Append(f, 1).Copy, Is.Null, "page boundary: a fresh page, nothing to copy");
    }

    [Test]
    public void FreeReturnsPagesAndTheyAreReused()
    {
        var a = new PageAllocator(6, 4);
        int s = a.CreateSequence(), t = a.CreateSequence();
        a.Append(s, 9);  // 3 pages
        a.Append(t, 12); // 3 pages: pool full
        Assert.That(a.FreePages, Is.Zero);
        var freed = Table(a, s);
        a.Free(s);
        Assert.That(a.FreePages, Is.EqualTo(3));
        Assert.That(a.Sequences, Is.EquivalentTo(new[] { t }));
        int u = a.CreateSequence();
        a.Append(u, 12);
        Assert.That(Table(a, u), Is.EquivalentTo(freed), "the only free pages are the freed ones");
        Assert.That(a.FreePages, Is.Zero);
    }

    [Test]
    public void DeadSequenceIsRejectedEverywhere()
    {
        var a = new PageAllocator(4, 4);
        int s = a.CreateSequence();
        a.Append(s, 3);
        a.Free(s);
        string before = CacheTestSupport.Snapshot(a);
        foreach (int id in new[] { s, 99, -1 })
        {
            var calls = new (string Name, Action Call)[]
            {
                ("Length", () => a.Length(id)),
                ("BlockTable", () => a.BlockTable(id)),
                ("Append", () => a.Append(id, 1)),
                ("PagesNeeded", () => a.PagesNeeded(id, 1)),
                ("Fork", () => a.Fork(id)),
                ("Free", () => a.Free(id)),
                ("Trim", () => a.Trim(id, 0)),
            };
            foreach (var (name, call) in calls)
            {
                var ex = Assert.Throws<ArgumentException>(call, $"{name}({id})")!;
                Assert.That(ex.ParamName, Is.EqualTo("sequence"), $"{name}({id})");
                Assert.That(ex.Message, Does.Contain(id.ToString()), $"{name}({id})");
            }
        }
        Assert.That(CacheTestSupport.Snapshot(a), Is.EqualTo(before));
    }

    [Test]
    public void NegativeTokensAndBadPagesAreRejected()
    {
        var a = new PageAllocator(4, 4);
        int s = a.CreateSequence();
        a.Append(s, 3);
        string before = CacheTestSupport.Snapshot(a);
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => a.Append(s, -1))!.ParamName, Is.EqualTo("tokens"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => a.RefCount(-1))!.ParamName, Is.EqualTo("page"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => a.RefCount(4))!.ParamName, Is.EqualTo("page"));
        Assert.That(CacheTestSupport.Snapshot(a), Is.EqualTo(before));
    }

    [Test]
    public void ExhaustionThrowsWithTheNumbersAndChangesNothing()
    {
        var a = new PageAllocator(5, 4);
        int s = a.CreateSequence(), t = a.CreateSequence();
        a.Append(s, 6);  // 2 pages
        a.Append(t, 5);  // 2 pages, 1 free
        string before = CacheTestSupport.Snapshot(a);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => a.Append(s, 7))!; // needs 2 new pages
        Assert.Multiple(() =>
        {
            Assert.That(ex.ParamName, Is.EqualTo("tokens"));
            Assert.That(ex.Message, Does.Contain("7").And.Contain("2 free pages").And.Contain("1 of 5"), ex.Message);
            Assert.That(ex.ActualValue, Is.EqualTo(7));
            Assert.That(CacheTestSupport.Snapshot(a), Is.EqualTo(before));
        });
        // The largest append that fits still works.
        a.Append(s, 6);
        Assert.That(a.FreePages, Is.Zero);
        before = CacheTestSupport.Snapshot(a);
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Append(t, 4));
        Assert.That(CacheTestSupport.Snapshot(a), Is.EqualTo(before));
        a.Append(t, 3); // fills t's partial page: no new page needed
        Assert.That(a.Length(t), Is.EqualTo(8));
    }

    [Test]
    public void ExhaustionOnTheCopyOfASharedPageChangesNothing()
    {
        var a = new PageAllocator(3, 4);
        int s = a.CreateSequence();
        a.Append(s, 10); // 3 pages, pool full, last page shared after the fork
        int f = a.Fork(s);
        Assert.That(a.PagesNeeded(f, 1), Is.EqualTo(1));
        string before = CacheTestSupport.Snapshot(a);
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => a.Append(f, 1))!;
        Assert.That(ex.ParamName, Is.EqualTo("tokens"));
        Assert.That(ex.Message, Does.Contain("0 of 3"), ex.Message);
        Assert.That(CacheTestSupport.Snapshot(a), Is.EqualTo(before));
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Append(s, 2));
        Assert.That(CacheTestSupport.Snapshot(a), Is.EqualTo(before));
        Assert.That(a.Append(f, 0).Copy, Is.Null, "zero tokens need no copy even with an empty pool");
        a.Free(s);
        Assert.That(a.Append(f, 2).Copy, Is.Null, "sole holder after the free: in place");
    }

    /// <summary>
    /// Lengths near <see cref="int.MaxValue"/> with huge pages: an append whose length fits in an int must
    /// get ceil(length / pageSize) pages, one whose length would overflow must be rejected, and a trim near
    /// 2^31 keeps the pages it needs (Append and Trim compute <c>length + PageSize - 1</c> in int).
    /// </summary>
    [Test]
    public void AppendNearIntMaxValueDoesNotOverflow()
    {
        const int pageSize = 1 << 30;
        var a = new PageAllocator(4, pageSize);
        int s = a.CreateSequence();
        a.Append(s, int.MaxValue);
        Assert.That(a.Length(s), Is.EqualTo(int.MaxValue));
        Assert.That(a.BlockTable(s).Length, Is.EqualTo(2), "ceil((2^31 - 1) / 2^30) pages");
        Assert.That(a.FreePages, Is.EqualTo(2));

        int t = a.CreateSequence();
        a.Append(t, 5);
        string before = CacheTestSupport.Snapshot(a);
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Append(t, int.MaxValue - 3), "length 2^31 + 1 does not fit an int");
        Assert.That(CacheTestSupport.Snapshot(a), Is.EqualTo(before));

        a.Trim(s, int.MaxValue - 1);
        Assert.That(a.BlockTable(s).Length, Is.EqualTo(2), "trim near 2^31 keeps ceil(length / pageSize) pages");
        Assert.That(a.RefCount(a.BlockTable(s)[1]), Is.EqualTo(1));
    }

    /// <summary>
    /// 2000 seeded random operations over up to 30 sequences. A model holds every sequence's token ids
    /// and the pool's slot contents (copies performed as returned, tokens written through the table), so
    /// writing into a page another sequence still reads shows up as a corrupted sequence. After every
    /// operation: refcounts = table references, free pages = pages with refcount 0, tables have
    /// ceil(length / pageSize) pages, lengths and contents match the model; failed appends change nothing.
    /// </summary>
    [TestCase(1UL, 48, 4)]
    [TestCase(2UL, 64, 8)]
    [TestCase(3UL, 24, 1)]
    [TestCase(4UL, 40, 16)]
    public void RandomOperationsKeepTheInvariants(ulong seed, int pageCount, int pageSize)
    {
        var rng = new Rng(seed);
        var a = new PageAllocator(pageCount, pageSize);
        var slots = new int[pageCount * pageSize];   // model of the pool: token id per slot
        var model = new Dictionary<int, List<int>>(); // token ids per live sequence
        int nextToken = 1;
        var counts = new Dictionary<string, int>();

        for (int op = 0; op < 2000; op++)
        {
            var live = model.Keys.Order().ToArray();
            int choice = rng.Next(0, 99);
            string kind;
            if (live.Length == 0 || (choice < 10 && live.Length < 30))
            {
                kind = "create";
                model[a.CreateSequence()] = [];
            }
            else if (choice < 55)
            {
                int s = live[rng.Next(0, live.Length - 1)];
                int n = rng.NextBool(0.15) ? 0 : rng.NextBool(0.1) ? rng.Next(pageSize, 6 * pageSize) : rng.Next(1, 2 * pageSize);
                int needed = a.PagesNeeded(s, n), free = a.FreePages;
                int length = model[s].Count;
                bool sharedPartial = length % pageSize != 0 && a.RefCount(a.BlockTable(s)[^1]) > 1;
                if (needed > free)
                {
                    kind = "append-exhausted";
                    string before = CacheTestSupport.Snapshot(a);
                    var ex = Assert.Throws<ArgumentOutOfRangeException>(() => a.Append(s, n), $"op {op}: append {n} to {s} needing {needed} of {free}")!;
                    Assert.That(ex.ParamName, Is.EqualTo("tokens"));
                    Assert.That(ex.Message, Does.Contain($"{needed}").And.Contain($"{free} of {pageCount}"), ex.Message);
                    Assert.That(CacheTestSupport.Snapshot(a), Is.EqualTo(before), $"op {op}: failed append changed the allocator");
                }
                else
                {
                    kind = n == 0 ? "append-0" : sharedPartial ? "append-cow" : "append";
                    var oldTable = a.BlockTable(s).ToArray();
                    var placement = a.Append(s, n);
                    Assert.That(a.FreePages, Is.EqualTo(free - needed), $"op {op}: PagesNeeded({n}) = {needed} but the pool lost {free - a.FreePages}");
                    Assert.That((placement.Start, placement.Count), Is.EqualTo((length, n)), $"op {op}");
                    var table = a.BlockTable(s).ToArray();
                    if (n > 0 && sharedPartial)
                    {
                        Assert.That(placement.Copy, Is.EqualTo(new PageCopy(oldTable[^1], table[oldTable.Length - 1], length % pageSize)), $"op {op}: copy");
                    }
                    else
                    {
                        Assert.That(placement.Copy, Is.Null, $"op {op}: unexpected copy");
                        Assert.That(table[..oldTable.Length], Is.EqualTo(oldTable), $"op {op}: existing pages must stay");
                    }
                    if (placement.Copy is { } c)
                    {
                        Array.Copy(slots, c.Source * pageSize, slots, c.Destination * pageSize, c.Slots);
                    }
                    for (int i = 0; i < n; i++)
                    {
                        int p = length + i;
                        slots[table[p / pageSize] * pageSize + p % pageSize] = nextToken;
                        model[s].Add(nextToken++);
                    }
                }
            }
            else if (choice < 70)
            {
                kind = "fork";
                if (live.Length >= 30) continue;
                int s = live[rng.Next(0, live.Length - 1)];
                int free = a.FreePages;
                int f = a.Fork(s);
                Assert.That(a.FreePages, Is.EqualTo(free), "fork takes no page");
                model[f] = [.. model[s]];
            }
            else if (choice < 85)
            {
                kind = "free";
                int s = live[rng.Next(0, live.Length - 1)];
                a.Free(s);
                model.Remove(s);
            }
            else
            {
                kind = "trim";
                int s = live[rng.Next(0, live.Length - 1)];
                int length = rng.Next(0, model[s].Count);
                a.Trim(s, length);
                model[s].RemoveRange(length, model[s].Count - length);
            }
            counts[kind] = counts.GetValueOrDefault(kind) + 1;
            CheckInvariants(a, model, slots, $"op {op} ({kind})");
        }
        // The run must have exercised every path.
        foreach (string k in new[] { "create", "append", "append-0", "append-cow", "append-exhausted", "fork", "free", "trim" })
        {
            if (k == "append-cow" && pageSize == 1) continue; // no partial pages
            Assert.That(counts.GetValueOrDefault(k), Is.GreaterThan(0), $"operation kind '{k}' never happened: {string.Join(", ", counts)}");
        }
    }

    private static void CheckInvariants(PageAllocator a, Dictionary<int, List<int>> model, int[] slots, string where)
    {
        int ps = a.PageSize;
        var references = new int[a.PageCount];
        int entries = 0;
        Assert.That(a.Sequences, Is.EquivalentTo(model.Keys), $"{where}: live sequences");
        foreach (var (s, tokens) in model)
        {
            var table = a.BlockTable(s);
            Assert.That(a.Length(s), Is.EqualTo(tokens.Count), $"{where}: length of {s}");
            Assert.That(table.Length, Is.EqualTo((tokens.Count + ps - 1) / ps), $"{where}: pages of {s}");
            var distinct = new HashSet<int>();
            foreach (int p in table)
            {
                Assert.That(p, Is.InRange(0, a.PageCount - 1), $"{where}: page id");
                Assert.That(distinct.Add(p), Is.True, $"{where}: page {p} twice in the table of {s}");
                references[p]++;
                entries++;
            }
            for (int i = 0; i < tokens.Count; i++)
            {
                if (slots[table[i / ps] * ps + i % ps] != tokens[i])
                {
                    Assert.Fail($"{where}: sequence {s} position {i} reads token {slots[table[i / ps] * ps + i % ps]}, expected {tokens[i]} (a shared page was written)");
                }
            }
        }
        int refSum = 0, zero = 0;
        for (int p = 0; p < a.PageCount; p++)
        {
            int r = a.RefCount(p);
            if (r < 0 || r != references[p]) Assert.Fail($"{where}: page {p} refcount {r}, referenced by {references[p]} tables");
            refSum += r;
            if (r == 0) zero++;
        }
        Assert.That(refSum, Is.EqualTo(entries), $"{where}: refcount sum vs table entries");
        Assert.That(a.FreePages, Is.EqualTo(zero), $"{where}: free pages vs pages with refcount 0");
    }
}
