// CPU tests of the GPU decode planning: split counts (DESIGN.md section 7's rule), page-aligned split sizes, row
// chunks, occupancy estimate, and block-table packing from a scrambled allocator.
using FastAttention.Caching;
using FastAttention.Gpu;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class DecodePlannerTests
{
    private const int H100Sms = 132;

    [Test]
    public void ABatchThatFillsTwoWavesIsNotSplit()
    {
        // (64, 1k) and (256, 2k) at 8 KV heads, 4 rows per KV head: 512 and 2048 blocks >= 2 x 132.
        var plan = DecodePlanner.Plan(64, 8, 4, 1024, 16, H100Sms, 2);
        Assert.That(plan, Is.EqualTo(new DecodePlan(1, 1024, 1)));
        Assert.That(DecodePlanner.Plan(256, 8, 4, 2048, 16, H100Sms, 2).Splits, Is.EqualTo(1));
    }

    [Test]
    public void OneLongSequenceIsSplitToTheSmallestCountWithin85PercentOfTheBestWaveEfficiency()
    {
        // 8 blocks unsplit, 264 resident slots: 29 splits give 232/264 = 0.879 >= 0.85 x 1.0 (33 splits fill a wave);
        // 28 give 224/264 = 0.848. 65536 / 29 = 2260 keys, rounded up to pages of 16: 2272, and 29 of them are needed.
        var plan = DecodePlanner.Plan(1, 8, 4, 65536, 16, H100Sms, 2);
        Assert.That(plan, Is.EqualTo(new DecodePlan(29, 2272, 1)));
    }

    [Test]
    public void EveryPlanCoversTheContextWithWholePagesAndNoEmptyTrailingSplit()
    {
        var rng = new Rng(17);
        for (int i = 0; i < 2000; i++)
        {
            int batch = rng.Next(1, 300), hkv = rng.Next(1, 16), rows = rng.Next(1, 130), page = 1 << rng.Next(3, 8);
            int maxLength = rng.NextBool(0.1) ? rng.Next(0, 300) : rng.Next(0, 200_000);
            int sms = rng.Next(1, 150), perSm = rng.Next(1, 8);
            int? forced = rng.NextBool(0.2) ? rng.Next(1, 300) : null;
            var plan = DecodePlanner.Plan(batch, hkv, rows, maxLength, page, sms, perSm, forced);
            string what = $"B{batch} Hkv{hkv} rows{rows} L{maxLength} page{page} sms{sms}x{perSm} forced {forced}: {plan}";
            Assert.That(plan.RowChunks, Is.EqualTo((rows + 7) / 8), what);
            Assert.That(plan.KeysPerSplit % page, Is.Zero, what);
            Assert.That(plan.Splits, Is.InRange(1, DecodePlanner.MaxSplits), what);
            Assert.That((long)plan.Splits * plan.KeysPerSplit, Is.GreaterThanOrEqualTo(maxLength), what);
            if (plan.Splits > 1)
            {
                Assert.That((long)(plan.Splits - 1) * plan.KeysPerSplit, Is.LessThan(maxLength), what);
                if (forced is null) Assert.That(plan.KeysPerSplit, Is.GreaterThanOrEqualTo(DecodePlanner.MinKeysPerSplit), what);
            }
            if (forced is null && (long)batch * hkv * plan.RowChunks >= 2L * sms) Assert.That(plan.Splits, Is.EqualTo(1), what);
            if (forced is { } f) Assert.That(plan.Splits, Is.LessThanOrEqualTo(f), what);
            Assert.That((long)plan.Splits * plan.RowChunks, Is.LessThanOrEqualTo(65535), what);
        }
    }

    [Test]
    public void TheChosenSplitCountIsTheSmallestWithin85PercentOfTheBest()
    {
        // Recomputes the rule independently for contexts long enough that the minimum split size does not cap it.
        foreach (var (batch, hkv, sms, perSm) in new[] { (1, 8, 132, 2), (2, 8, 132, 3), (3, 4, 108, 2), (1, 1, 132, 4), (5, 2, 80, 1) })
        {
            int blocks = batch * hkv, slots = sms * perSm;
            double Efficiency(int s)
            {
                double waves = (double)blocks * s / slots;
                return waves / Math.Ceiling(waves);
            }
            double best = Enumerable.Range(1, 128).Max(Efficiency);
            int expected = Enumerable.Range(1, 128).First(s => Efficiency(s) >= 0.85 * best);
            var plan = DecodePlanner.Plan(batch, hkv, 1, 1 << 20, 16, sms, perSm);
            int keys = (((1 << 20) + expected - 1) / expected + 15) / 16 * 16;
            Assert.That(plan.KeysPerSplit, Is.EqualTo(keys), $"B{batch} Hkv{hkv} {sms}x{perSm}: {expected} splits by the rule");
            Assert.That(plan.Splits, Is.EqualTo(((1 << 20) + keys - 1) / keys), $"B{batch} Hkv{hkv} {sms}x{perSm}");
        }
    }

    [Test]
    public void ShortContextsAndForcedCountsAreClamped()
    {
        Assert.That(DecodePlanner.Plan(1, 1, 1, 0, 16, 132, 2), Is.EqualTo(new DecodePlan(1, 16, 1)));
        Assert.That(DecodePlanner.Plan(1, 1, 1, 100, 16, 132, 2), Is.EqualTo(new DecodePlan(1, 112, 1)));
        Assert.That(DecodePlanner.Plan(1, 1, 1, 1000, 16, 132, 2).Splits, Is.LessThanOrEqualTo(4), "at least 256 keys per split");
        Assert.That(DecodePlanner.Plan(1, 1, 1, 100, 8, 132, 2, splits: 50), Is.EqualTo(new DecodePlan(13, 8, 1)));
        Assert.That(DecodePlanner.Plan(1, 1, 1, 5, 8, 132, 2, splits: 4), Is.EqualTo(new DecodePlan(1, 8, 1)));
        Assert.That(DecodePlanner.Plan(1, 1, 17, 4096, 256, 132, 2, splits: 3), Is.EqualTo(new DecodePlan(3, 1536, 3)));
    }

    [Test]
    public void BadArgumentsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodePlanner.Plan(0, 1, 1, 10, 16, 132, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodePlanner.Plan(1, 0, 1, 10, 16, 132, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodePlanner.Plan(1, 1, 0, 10, 16, 132, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodePlanner.Plan(1, 1, 1, -1, 16, 132, 2));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => DecodePlanner.Plan(1, 1, 1, 10, 24, 132, 2))!;
        Assert.That(e.ParamName, Is.EqualTo("pageSize"));
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodePlanner.Plan(1, 1, 1, 10, 16, 0, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodePlanner.Plan(1, 1, 1, 10, 16, 132, 2, splits: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodePlanner.Plan(1, 1, 8 * 65536, 10, 16, 132, 2));
    }

    [Test]
    public void ResidentBlocksFollowRegistersSharedMemoryAndThreads()
    {
        // H100: 64K registers, 228 KiB shared memory, 2048 threads per SM.
        Assert.That(DecodePlanner.BlocksPerMultiprocessor(205, 37376, 128, 65536, 233472, 2048), Is.EqualTo(2));
        Assert.That(DecodePlanner.BlocksPerMultiprocessor(64, 0, 128, 65536, 233472, 2048), Is.EqualTo(8));
        Assert.That(DecodePlanner.BlocksPerMultiprocessor(32, 0, 128, 65536, 233472, 2048), Is.EqualTo(16), "thread limit");
        Assert.That(DecodePlanner.BlocksPerMultiprocessor(32, 40000, 128, 65536, 166912, 2048), Is.EqualTo(4), "shared memory limit (A100)");
        Assert.That(DecodePlanner.BlocksPerMultiprocessor(255, 0, 1024, 65536, 233472, 2048), Is.EqualTo(1), "never below 1");
    }

    [Test]
    public void PackedTablesEqualTheAllocatorsTablesPaddedWithZeros()
    {
        var rng = new Rng(3);
        var a = new PageAllocator(200, 16);
        var ids = new List<int>();
        for (int step = 0; step < 300; step++)
        {
            int op = rng.Next(0, 9);
            if (op == 0 || ids.Count == 0) ids.Add(a.CreateSequence());
            else if (op == 1 && ids.Count > 1)
            {
                int i = rng.Next(0, ids.Count - 1);
                a.Free(ids[i]);
                ids.RemoveAt(i);
            }
            else if (op == 2) ids.Add(a.Fork(ids[rng.Next(0, ids.Count - 1)]));
            else if (op == 3)
            {
                int s = ids[rng.Next(0, ids.Count - 1)];
                a.Trim(s, rng.Next(0, a.Length(s)));
            }
            else
            {
                int s = ids[rng.Next(0, ids.Count - 1)], n = rng.Next(0, 40);
                if (a.PagesNeeded(s, n) <= a.FreePages) a.Append(s, n);
            }
        }
        int[] batch = [.. ids.Where((_, i) => i % 2 == 0).Reverse()];
        int stride = DecodePlanner.TableStride(a, batch);
        Assert.That(stride, Is.EqualTo(Math.Max(1, batch.Max(s => a.BlockTable(s).Length))));
        var lengths = new int[batch.Length];
        var tables = Enumerable.Repeat(-7, batch.Length * stride).ToArray();
        DecodePlanner.PackBlockTables(a, batch, stride, lengths, tables);
        for (int b = 0; b < batch.Length; b++)
        {
            var expected = a.BlockTable(batch[b]).ToArray();
            Assert.That(lengths[b], Is.EqualTo(a.Length(batch[b])));
            Assert.That(tables.AsSpan(b * stride, expected.Length).ToArray(), Is.EqualTo(expected), $"row {b}");
            Assert.That(tables.AsSpan(b * stride + expected.Length, stride - expected.Length).ToArray(), Is.All.Zero, $"row {b} padding");
        }
    }

    [Test]
    public void PackingRejectsDeadSequencesAndShortDestinations()
    {
        var a = new PageAllocator(8, 16);
        int s = a.CreateSequence();
        a.Append(s, 40);
        var e = Assert.Throws<ArgumentException>(() => DecodePlanner.TableStride(a, [s, 99]))!;
        Assert.That(e.ParamName, Is.EqualTo("sequences"));
        Assert.That(e.Message, Does.Contain("sequences[1] = 99"));
        Assert.Throws<ArgumentException>(() => DecodePlanner.PackBlockTables(a, [s], 3, new int[1], new int[2]));
        Assert.Throws<ArgumentException>(() => DecodePlanner.PackBlockTables(a, [s], 2, new int[1], new int[2]), "3 pages do not fit a stride of 2");
    }
}
