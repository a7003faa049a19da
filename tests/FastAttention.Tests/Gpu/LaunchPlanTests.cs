// CPU tests of the pure launch packing of the GPU decode and KV append (DecodeLaunchPlan, PagedDecodeTables,
// PagedAppendStaging, ContiguousAppendStaging, KvAppendLaunch) and of the decode limits the multi-head module checks
// before it appends (they must agree with DecodePlanner.Plan, which the decode launch runs).
using FastAttention.Caching;
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class LaunchPlanTests
{
    private const int MaxRows = DecodePlanner.MaxGridYz * DecodePlanner.RowsPerBlock;

    private static DecodeOperands Operands(int tableStride = 3) => new(
        0x1000, new Strides3(4096, 512, 64), 0x2000, new Strides3(8192, 1024, 64), 0x3000, new Strides3(40, 5, 1),
        0x4000, 0x5000, 0x6000, tableStride, 0x7000);

    [TestCase(1, 8, 8)]
    [TestCase(4, 32, 4)]
    [TestCase(7, 12, 1)]
    public void TheRowLimitIsExactlyWhereDecodePlannerStopsPlanning(int batch, int heads, int kvHeads)
    {
        int group = heads / kvHeads;
        int most = MaxRows / group;
        DecodeLaunchPlan.RequireLaunchable(batch, most, heads, kvHeads, "input");
        Assert.DoesNotThrow(() => DecodePlanner.Plan(batch, kvHeads, most * group, 100, 16, 132, 2));
        var e = Assert.Throws<ArgumentException>(() => DecodeLaunchPlan.RequireLaunchable(batch, most + 1, heads, kvHeads, "input"));
        Assert.That(e!.ParamName, Is.EqualTo("input"));
        Assert.That(e.Message, Does.Contain($"{(most + 1L) * group} rows").And.Contain($"{DecodePlanner.MaxGridYz}"));
        // Where the rows first need one block too many, the planner (run inside the launch) refuses as well.
        int first = (MaxRows + group) / group;
        Assert.That(() => DecodePlanner.Plan(batch, kvHeads, first * group, 100, 16, 132, 2), Throws.InstanceOf<ArgumentOutOfRangeException>());
        Assert.That(() => DecodeLaunchPlan.RequireLaunchable(batch, first, heads, kvHeads, "input"), Throws.ArgumentException);
    }

    [Test]
    public void BatchAndShapeLimits()
    {
        DecodeLaunchPlan.RequireLaunchable(DecodePlanner.MaxGridYz, 1, 8, 8, "input");
        var e = Assert.Throws<ArgumentException>(() => DecodeLaunchPlan.RequireLaunchable(DecodePlanner.MaxGridYz + 1, 1, 8, 8, "input"));
        Assert.That(e!.ParamName, Is.EqualTo("input"));
        Assert.That(e.Message, Does.Contain("65536"));
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodeLaunchPlan.RequireLaunchable(1, 1, 6, 4, "input"));
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodeLaunchPlan.RequireLaunchable(1, 0, 8, 8, "input"));
    }

    [Test]
    public void CreateRunsTheSameLimitsNamingTheQuery()
    {
        var pool = KvPoolGeometry.Paged(10, 16, 1, 64);
        var e = Assert.Throws<ArgumentException>(() => DecodeLaunchPlan.Create(KernelElementType.Float16, pool, 1, MaxRows + 1, 1, 100, 0.125f,
            new AttentionMask(), GpuDecodeOptions.Default, new DecodeDevice(132, 2), Operands()));
        Assert.That(e!.ParamName, Is.EqualTo("query"));
    }

    [Test]
    public void TunedUnsplitLaunchPacksEveryField()
    {
        var pool = KvPoolGeometry.Paged(10, 16, 2, 128);
        var mask = new AttentionMask { Causal = true, WindowLeft = 100, WindowRight = 0 };
        // 64 x 2 blocks fill two waves of 8 x 2 slots: no split.
        var plan = DecodeLaunchPlan.Create(KernelElementType.BFloat16, pool, 64, 3, 8, 40, 0.5f, mask,
            new GpuDecodeOptions { Softcap = 30 }, new DecodeDevice(8, 2), Operands(7));
        Assert.That(plan.Split, Is.EqualTo(new DecodePlan(1, 48, 2)));
        Assert.That(plan.KernelName, Is.EqualTo("fa_paged_decode_hd128_bf16"));
        // The fp16/bf16 tuned kernel stages 3 tiles of 64 keys of K and V (128 x 2 bytes a row) plus 2 x 64 page ids.
        Assert.That(plan.Config, Is.EqualTo(new LaunchConfig(new Dim3(2, 64, 2), 128, 3 * 2 * 64 * 128 * 2 + 2 * 64 * 4)));
        Assert.That(plan.CombineConfig, Is.Null);
        Assert.That(plan.ScratchElements, Is.Zero);
        var p = plan.Parameters(0x9999);
        Assert.That((p.PartO, p.PartLse), Is.EqualTo(((nint)0, (nint)0)), "no split: the scratch is not passed");
        Assert.That((p.Q, p.O, p.Lse, p.KPool, p.VPool, p.BlockTables, p.SeqLens), Is.EqualTo(((nint)0x1000, (nint)0x2000, (nint)0x3000, (nint)0x4000, (nint)0x5000, (nint)0x6000, (nint)0x7000)));
        Assert.That((p.QStrideB, p.QStrideS, p.QStrideH, p.OStrideB, p.OStrideS, p.OStrideH), Is.EqualTo((4096L, 512L, 64L, 8192L, 1024L, 64L)));
        Assert.That((p.LseStrideB, p.LseStrideH, p.LseStrideS), Is.EqualTo((40L, 5L, 1L)));
        Assert.That((p.KvHeadStride, p.PageStride, p.PageShift, p.TableStride), Is.EqualTo((10L * 16 * 128, 16L * 128, 4, 7)));
        Assert.That((p.Batch, p.QLen, p.Heads, p.KvHeads, p.Group), Is.EqualTo((64, 3, 8, 2, 4)));
        Assert.That((p.Causal, p.WindowLeft, p.WindowRight), Is.EqualTo((1, 100, 0)));
        Assert.That((p.NumSplits, p.KeysPerSplit, p.RowChunks), Is.EqualTo((1, 48, 2)));
        Assert.That(p.ScaleLog2, Is.EqualTo(0.5f * 1.44269504088896341f));
        Assert.That((p.Softcap, p.SoftcapLog2, p.ScaleOverSoftcap), Is.EqualTo((30f, 30f * 1.44269504088896341f, 0.5f / 30f)));
    }

    [Test]
    public void SplitPlainLaunchHasACombineAndScratchForEveryPartialRow()
    {
        var pool = KvPoolGeometry.Paged(100, 32, 4, 64);
        var plan = DecodeLaunchPlan.Create(KernelElementType.Float32, pool, 2, 5, 8, 1000, 0.125f, new AttentionMask(),
            new GpuDecodeOptions { Kernel = DecodeKernel.Plain, Splits = 4 }, new DecodeDevice(132, 2), Operands());
        // 1000 keys / 4 = 250, rounded up to 256 (pages of 32): 4 splits.
        Assert.That(plan.Split, Is.EqualTo(new DecodePlan(4, 256, 2)));
        Assert.That(plan.KernelName, Is.EqualTo("fa_paged_decode_simt_hd64_f32"));
        Assert.That(plan.Config, Is.EqualTo(new LaunchConfig(new Dim3(8, 2, 4), 128)));
        Assert.That(plan.CombineName, Is.EqualTo("fa_decode_combine_hd64_f32"));
        long outputRows = 2 * 8 * 5;
        Assert.That(plan.CombineConfig, Is.EqualTo(new LaunchConfig(new Dim3((uint)((outputRows + 3) / 4)), 128)));
        Assert.That(plan.ScratchElements, Is.EqualTo(outputRows * 4 * 65));
        var p = plan.Parameters(0x10000);
        Assert.That(p.PartO, Is.EqualTo((nint)0x10000));
        Assert.That(p.PartLse, Is.EqualTo((nint)(0x10000 + outputRows * 4 * 64 * sizeof(float))));
        Assert.That(p.PartLse + (nint)(outputRows * 4 * sizeof(float)), Is.EqualTo((nint)(0x10000 + plan.ScratchElements * sizeof(float))), "the LSEs end the scratch");
        var tuned = DecodeLaunchPlan.Create(KernelElementType.Float32, pool, 2, 5, 8, 1000, 0.125f, new AttentionMask(),
            new GpuDecodeOptions { Splits = 4 }, new DecodeDevice(132, 2), Operands());
        Assert.That(tuned.Config, Is.EqualTo(new LaunchConfig(new Dim3(4, 2, 2 * 4), 128)), "tuned: (Hkv, B, row chunks x splits)");
    }

    [TestCase(KernelElementType.Float16, 64, 49664)]
    [TestCase(KernelElementType.BFloat16, 128, 98816)]
    [TestCase(KernelElementType.Float16, 256, 131584)]
    [TestCase(KernelElementType.Float32, 128, 0)]
    public void TheTunedKernelGetsItsSharedMemoryOrFallsBackToThePlainOne(KernelElementType type, int d, int bytes)
    {
        Assert.That(DecodeLaunchPlan.TunedSharedMemoryBytes(type, d), Is.EqualTo(bytes));
        var pool = KvPoolGeometry.Paged(100, 16, 2, d);
        DecodeLaunchPlan Plan(int optIn) => DecodeLaunchPlan.Create(type, pool, 3, 1, 8, 500, 0.1f, new AttentionMask(),
            GpuDecodeOptions.Default, new DecodeDevice(132, 2, optIn), Operands());
        // sm_90 opts in to 227 KiB per block: every tuned variant fits.
        var tuned = Plan(232448);
        Assert.That(tuned.KernelName, Is.EqualTo(DecodeLaunchPlan.DecodeKernelName(DecodeKernel.Tuned, type, d)));
        Assert.That(tuned.Config.DynamicSharedMemoryBytes, Is.EqualTo(bytes));
        // sm_86 / sm_89 allow 99 KiB: D = 256 fp16/bf16 runs the plain kernel (its grid, no dynamic shared memory).
        var small = Plan(101376);
        bool fits = bytes <= 101376;
        Assert.That(small.KernelName, Is.EqualTo(DecodeLaunchPlan.DecodeKernelName(fits ? DecodeKernel.Tuned : DecodeKernel.Plain, type, d)));
        Assert.That(small.Config.DynamicSharedMemoryBytes, Is.EqualTo(fits ? bytes : 0));
        if (!fits) Assert.That(small.Config.Grid, Is.EqualTo(new Dim3(8, 3, (uint)small.Split.Splits)), "plain grid: (H, B, splits)");
    }

    [Test]
    public void KernelNamesAreKernelsOfTheRegisteredModules()
    {
        foreach (var type in new[] { KernelElementType.Float32, KernelElementType.Float16, KernelElementType.BFloat16 })
        {
            foreach (int d in KernelRegistry.DecodeHeadDims)
            {
                Assert.That(KernelRegistry.PagedDecode(type, d).KernelNames, Is.EquivalentTo(new[]
                {
                    DecodeLaunchPlan.DecodeKernelName(DecodeKernel.Tuned, type, d), DecodeLaunchPlan.DecodeKernelName(DecodeKernel.Plain, type, d),
                    DecodeLaunchPlan.CombineKernelName(type, d),
                }));
                Assert.That(KernelRegistry.KvAppend(type, d).KernelNames, Is.EquivalentTo(new[]
                {
                    KvAppendLaunch.AppendKernelName(type, d), KvAppendLaunch.CopyKernelName(type, d),
                }));
            }
        }
    }

    [Test]
    public void PagedDecodeTablesMeasurePackAndBind()
    {
        var allocator = new PageAllocator(32, 8);
        int a = allocator.CreateSequence(), b = allocator.CreateSequence(), c = allocator.CreateSequence();
        allocator.Append(a, 5);
        allocator.Append(b, 30);
        allocator.Append(a, 12);
        int[] sequences = [b, c, a];
        var tables = PagedDecodeTables.Measure(allocator, sequences);
        Assert.That(tables, Is.EqualTo(new PagedDecodeTables(3, 4, 30)));
        Assert.That(tables.Ints, Is.EqualTo(3 + 3 * 4));
        var staged = Enumerable.Repeat(-7, tables.Ints + 2).ToArray();
        tables.Pack(allocator, sequences, staged);
        Assert.That(staged[..3], Is.EqualTo(new[] { 30, 0, 17 }));
        Assert.That(staged[3..7], Is.EqualTo(allocator.BlockTable(b).ToArray()));
        Assert.That(staged[7..11], Is.EqualTo(new[] { 0, 0, 0, 0 }));
        Assert.That(staged[11..15], Is.EqualTo(allocator.BlockTable(a).ToArray().Append(0)));
        Assert.That(staged[15..], Is.EqualTo(new[] { -7, -7 }), "nothing written past the tables");
        var plan = DecodeLaunchPlan.Create(KernelElementType.Float16, KvPoolGeometry.Paged(32, 8, 1, 64), 3, 1, 1, tables.MaxLength, 1f,
            new AttentionMask(), GpuDecodeOptions.Default, new DecodeDevice(1, 1), Operands(tables.TableStride) with { Tables = 0, Lengths = 0 });
        var bound = tables.Bind(plan, 0x40).Parameters(0);
        Assert.That((bound.SeqLens, bound.BlockTables), Is.EqualTo(((nint)0x40, (nint)(0x40 + 3 * sizeof(int)))));
        Assert.That(() => tables.Pack(allocator, sequences, new int[tables.Ints - 1]), Throws.ArgumentException);
        Assert.That(() => PagedDecodeTables.Measure(allocator, [a, 99]), Throws.ArgumentException.With.Message.Contains("99"));
    }

    [Test]
    public void StrideAfterAppendIsTheStrideMeasuredOnceTheAppendIsDone()
    {
        var rng = new Rng(23);
        for (int i = 0; i < 300; i++)
        {
            int pageSize = 1 << rng.Next(3, 6);
            var allocator = new PageAllocator(4096, pageSize);
            var ids = Enumerable.Range(0, rng.Next(1, 6)).Select(_ => allocator.CreateSequence()).ToArray();
            foreach (int id in ids) allocator.Append(id, rng.Next(0, 300));
            if (rng.NextBool(0.3)) ids = [.. ids, allocator.Fork(ids[0])];
            int n = rng.Next(0, 3 * pageSize);
            long predicted = PagedDecodeTables.StrideAfterAppend(allocator, ids, n);
            BatchAppend.Commit(allocator, ids, Enumerable.Repeat(n, ids.Length).ToArray());
            Assert.That(predicted, Is.EqualTo(PagedDecodeTables.Measure(allocator, ids).TableStride), $"case {i}");
        }
    }

    [Test]
    public void StagingThatPassesAnIntIsRefused()
    {
        PagedDecodeTables.RequireStageable(1000, 1000);
        var e = Assert.Throws<ArgumentException>(() => PagedDecodeTables.RequireStageable(65535, 40000));
        Assert.That(e!.ParamName, Is.EqualTo("sequences"));
        Assert.That(e.Message, Does.Contain((65535L + 65535L * 40000).ToString(System.Globalization.CultureInfo.InvariantCulture)));
    }

    [Test]
    public void PagedAppendStagingPacksTablesStartsPositionsAndCopies()
    {
        var allocator = new PageAllocator(16, 8);
        int a = allocator.CreateSequence(), b = allocator.CreateSequence();
        allocator.Append(a, 11);
        int child = allocator.Fork(a);
        int[] sequences = [a, b, child];
        int[] counts = [2, 9, 0];
        var placements = BatchAppend.Commit(allocator, sequences, counts);
        var staging = PagedAppendStaging.Measure(allocator, sequences, placements);
        Assert.That(staging, Is.EqualTo(new PagedAppendStaging(3, 2, 11, 1)));
        Assert.That((staging.StartsAt, staging.PositionsAt, staging.CopiesAt, staging.Ints), Is.EqualTo((6, 10, 13, 16)));
        var staged = new int[staging.Ints];
        staging.Pack(allocator, sequences, placements, staged);
        Assert.That(staged[0..2], Is.EqualTo(allocator.BlockTable(a).ToArray()));
        Assert.That(staged[2..4], Is.EqualTo(allocator.BlockTable(b).ToArray()));
        Assert.That(staged[4..6], Is.EqualTo(allocator.BlockTable(child).ToArray()));
        Assert.That(staged[6..10], Is.EqualTo(new[] { 0, 2, 11, 11 }), "token starts, then the total");
        Assert.That(staged[10..13], Is.EqualTo(new[] { 11, 0, 11 }), "first positions");
        var copy = placements[0].Copy!.Value;
        Assert.That(staged[13..16], Is.EqualTo(new[] { copy.Source, copy.Destination, copy.Slots }));
        Assert.That(copy.Slots, Is.EqualTo(3));

        var pool = KvPoolGeometry.Paged(16, 8, 2, 64);
        var copyLaunch = staging.CopyLaunch(pool, 0x100, 0x200, 0x1000)!.Value;
        Assert.That(copyLaunch.Config, Is.EqualTo(new LaunchConfig(new Dim3(1, 2), 128)));
        Assert.That(copyLaunch.Parameters, Is.EqualTo(new KvCopyParams
        {
            KPool = 0x100, VPool = 0x200, Copies = 0x1000 + 13 * sizeof(int), PoolHeadStride = 16 * 8 * 64, PoolPageStride = 8 * 64, Count = 1,
        }));
        var src = new TokenSource(0, 128, 64);
        var append = staging.AppendLaunch(pool, 0x100, 0x200, 0x300, 0x400, src, true, 0x1000)!.Value;
        Assert.That(append.Config, Is.EqualTo(new LaunchConfig(new Dim3(11), 128)));
        Assert.That(append.Parameters, Is.EqualTo(new KvAppendParams
        {
            KSrc = 0x300, VSrc = 0x400, KPool = 0x100, VPool = 0x200,
            BlockTables = 0x1000, EntryTokenStart = 0x1000 + 6 * sizeof(int), EntryPosition = 0x1000 + 10 * sizeof(int),
            SrcEntryStride = 0, SrcTokenStride = 128, SrcHeadStride = 64, PoolHeadStride = 16 * 8 * 64, PoolPageStride = 8 * 64,
            Entries = 3, Tokens = 11, KvHeads = 2, TableStride = 2, PageShift = 3, Ragged = 1,
        }));
        Assert.That(() => PagedAppendStaging.Measure(allocator, sequences, placements[..2]), Throws.ArgumentException);
    }

    [Test]
    public void NoCopiesAndNoTokensMeanNoLaunches()
    {
        var allocator = new PageAllocator(4, 8);
        int a = allocator.CreateSequence();
        var placements = BatchAppend.Commit(allocator, [a], [0]);
        var staging = PagedAppendStaging.Measure(allocator, [a], placements);
        var pool = KvPoolGeometry.Paged(4, 8, 1, 64);
        Assert.That(staging.CopyLaunch(pool, 1, 2, 3), Is.Null);
        Assert.That(staging.AppendLaunch(pool, 1, 2, 3, 4, new TokenSource(0, 64, 64), true, 5), Is.Null);
    }

    [Test]
    public void ContiguousAppendStagingPacksStartsThenPositions()
    {
        var staged = Enumerable.Repeat(-1, ContiguousAppendStaging.Ints(3) + 1).ToArray();
        ContiguousAppendStaging.Pack([5, 0, 17], 4, staged);
        Assert.That(staged, Is.EqualTo(new[] { 0, 4, 8, 12, 5, 0, 17, -1 }));
        Assert.That(ContiguousAppendStaging.PositionsAt(3), Is.EqualTo(4));
        Assert.That(() => ContiguousAppendStaging.Pack([1, 2], 1, new int[4]), Throws.ArgumentException);
    }
}
