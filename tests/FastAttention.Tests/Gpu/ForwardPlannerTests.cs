// The CUDA forward's host-side planning, on the CPU: traits table, argument checks (same exception types and argument
// names as CpuAttention.Forward), kernel choice, grid, packed parameters, and the block-sparse key-tile lists against a
// brute-force scan of the block mask.
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class ForwardPlannerTests
{
    private static readonly nint Base = unchecked((nint)0x7f00_0000_0000L);

    private static TensorDesc Bshd(int b, int s, int h, int d) =>
        new(Base, [b, s, h, d], [(nint)s * h * d, (nint)h * d, d, 1]);

    private static TensorDesc Bhs(int b, int h, int s) => new(Base, [b, h, s], [(nint)h * s, s, 1]);

    private static ForwardPlan Plan(KernelElementType type, AttentionShape s, AttentionOptions? options = null,
        CudaKernelVariant variant = CudaKernelVariant.Tuned, bool lse = true) =>
        AttentionForwardPlanner.Plan(type, Bshd(s.Batch, s.QueryLength, s.Heads, s.HeadDim), Bshd(s.Batch, s.KeyLength, s.KvHeads, s.HeadDim),
            Bshd(s.Batch, s.KeyLength, s.KvHeads, s.HeadDim), Bshd(s.Batch, s.QueryLength, s.Heads, s.HeadDim),
            lse ? Bhs(s.Batch, s.Heads, s.QueryLength) : null, options ?? AttentionOptions.Default, variant);

    // ---- traits ------------------------------------------------------------------------------------------------

    [Test]
    public void TraitsCoverTheSupportedHeadDimsAndFitEveryTargetGpu()
    {
        Assert.That(AttentionKernelTraits.All.Select(t => t.HeadDim), Is.EqualTo(AttentionKernelTraits.SupportedHeadDims));
        foreach (var t in AttentionKernelTraits.All)
        {
            Assert.That(t.BlockM, Is.EqualTo(16 * t.Warps), t.ToString());
            Assert.That(t.BlockN % 16, Is.Zero, t.ToString());
            Assert.That(t.Threads, Is.InRange(32, 1024), t.ToString());
            Assert.That(t.SharedRowElements % 64, Is.Zero, t.ToString());
            Assert.That(t.SharedRowElements, Is.GreaterThanOrEqualTo(t.HeadDim), t.ToString());
            // A100's opt-in limit per block is 163 KiB (H100: 227 KiB).
            Assert.That(t.SharedMemoryBytes, Is.LessThanOrEqualTo(163 * 1024), t.ToString());
            Assert.That(t.SharedMemoryBytes, Is.EqualTo((t.BlockM + 4 * t.BlockN) * t.SharedRowElements * 2), t.ToString());
        }
    }

    [TestCase(1)]
    [TestCase(16)]
    [TestCase(48)]
    [TestCase(100)]
    [TestCase(512)]
    public void UnsupportedHeadDimsAreRejectedNamingQuery(int d)
    {
        var e = Assert.Throws<ArgumentException>(() => AttentionKernelTraits.For(d))!;
        Assert.That(e.ParamName, Is.EqualTo("query"));
        Assert.That(e.Message, Does.Contain(d.ToString(System.Globalization.CultureInfo.InvariantCulture)).And.Contain("32, 64, 80, 96, 128, 256"));
        Assert.That(() => Plan(KernelElementType.Float16, new AttentionShape(1, 4, 4, 1, 1, d)),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("query"));
    }

    // ---- kernel choice, grid, parameters ---------------------------------------------------------------------------

    [TestCase("none", "")]
    [TestCase("klen", "")]
    [TestCase("qlen+klen", "")]
    [TestCase("causal", "_causal")]
    [TestCase("win(5,3)", "_causal")]
    [TestCase("win(-1,0)", "_causal")]
    [TestCase("local(16,16,1,0)", "_sparse")]
    [TestCase("causal+random(16,16,2)", "_sparse")]
    public void TunedKernelNameSaysWhatItIs(string mask, string suffix)
    {
        var s = new AttentionShape(2, 113, 203, 4, 2, 128);
        var plan = Plan(KernelElementType.Float16, s, new AttentionOptions { Mask = MaskSpec.Build(mask, s, 1) });
        Assert.That(plan.KernelName, Is.EqualTo("fa_fwd_hd128_f16" + suffix));
        Assert.That(plan.Specialization.KernelNames, Does.Contain(plan.KernelName));
        Assert.That(plan.UsesTunedKernel, Is.True);
        var t = AttentionKernelTraits.For(128);
        Assert.That(plan.Launch.Grid, Is.EqualTo(new Dim3((uint)((113 + t.BlockM - 1) / t.BlockM), 4, 2)));
        Assert.That(plan.Launch.Block, Is.EqualTo(new Dim3((uint)t.Threads)));
        Assert.That(plan.Launch.DynamicSharedMemoryBytes, Is.EqualTo(t.SharedMemoryBytes));
        Assert.That(plan.Params.QueryTiles, Is.EqualTo((113 + t.BlockM - 1) / t.BlockM));
    }

    [Test]
    public void Fp32AndThePlainVariantRunTheSimtKernel()
    {
        var s = new AttentionShape(1, 17, 9, 2, 1, 64);
        var f32 = Plan(KernelElementType.Float32, s);
        Assert.That(f32.KernelName, Is.EqualTo("fa_fwd_simt_f32"));
        Assert.That(f32.UsesTunedKernel, Is.False);
        Assert.That(f32.Launch.Grid, Is.EqualTo(new Dim3(5, 2, 1)));
        Assert.That(f32.Launch.Block, Is.EqualTo(new Dim3(128)));
        Assert.That(f32.Launch.DynamicSharedMemoryBytes, Is.Zero);
        Assert.That(Plan(KernelElementType.BFloat16, s, variant: CudaKernelVariant.Plain).KernelName, Is.EqualTo("fa_fwd_simt_bf16"));
        Assert.That(Plan(KernelElementType.BFloat16, s).KernelName, Is.EqualTo("fa_fwd_hd64_bf16"));
    }

    [Test]
    public void LayoutsTheTunedKernelCannotReadFallBackToSimt()
    {
        var s = new AttentionShape(2, 33, 40, 4, 2, 64);
        var q = Bshd(2, 33, 4, 64);
        var k = Bshd(2, 40, 2, 64);
        var o = Bshd(2, 33, 4, 64);
        ForwardPlan With(TensorDesc q2, TensorDesc k2, TensorDesc o2) =>
            AttentionForwardPlanner.Plan(KernelElementType.Float16, q2, k2, k2, o2, null, AttentionOptions.Default, CudaKernelVariant.Tuned);
        Assert.That(With(q, k, o).UsesTunedKernel, Is.True);
        // [B, H, S, D] memory seen as BSHD: strides are multiples of 8 elements, so the tuned kernel takes it.
        var bhsd = new TensorDesc(Base, [2, 33, 4, 64], [4 * 33 * 64, 64, 33 * 64, 1]);
        Assert.That(With(bhsd, k, o).UsesTunedKernel, Is.True);
        Assert.That(With(q with { Pointer = Base + 2 }, k, o).UsesTunedKernel, Is.False, "base not 16-byte aligned");
        Assert.That(With(q, k, o with { Pointer = Base + 8 }).UsesTunedKernel, Is.False, "output base not 16-byte aligned");
        Assert.That(With(new TensorDesc(Base, [2, 33, 4, 64], [33 * 4 * 128, 4 * 128, 128, 2]), k, o).UsesTunedKernel, Is.False, "head-dim stride 2");
        Assert.That(With(q, new TensorDesc(Base, [2, 40, 2, 64], [40 * 130, 130, 65, 1]), o).UsesTunedKernel, Is.False, "row stride not a multiple of 8");
        // A stride of a size-1 dimension does not matter.
        var oneHead = new TensorDesc(Base, [2, 33, 1, 64], [33 * 64, 64, 3, 1]);
        Assert.That(AttentionForwardPlanner.TunedLayoutOk(oneHead, 2), Is.True);
        Assert.That(With(bhsd, k, o).KernelName, Is.EqualTo("fa_fwd_hd64_f16"));
        Assert.That(With(q with { Pointer = Base + 2 }, k, o).KernelName, Is.EqualTo("fa_fwd_simt_f16"));
        _ = s;
    }

    [TestCase(0.3f, 1f)]
    [TestCase(-0.4f, -1f)]
    [TestCase(0f, 0f)]
    public void ScaleFoldsItsSignIntoQAndItsMagnitudeIntoTheBase2Factor(float scale, float sign)
    {
        var s = new AttentionShape(1, 4, 4, 1, 1, 64);
        var p = Plan(KernelElementType.Float16, s, new AttentionOptions { Scale = scale }).Params;
        Assert.That(p.QuerySign, Is.EqualTo(sign));
        Assert.That(p.Factor, Is.EqualTo(scale == 0 ? 1f : MathF.Abs(scale) * 1.44269504088896341f));
        var d = Plan(KernelElementType.Float16, s).Params;
        Assert.That(d.QuerySign, Is.EqualTo(1f));
        Assert.That(d.Factor, Is.EqualTo(1.44269504088896341f / 8f).Within(1e-7f), "default scale 1/sqrt(64)");
    }

    [Test]
    public void ParametersCarryShapesStridesMaskAndTables()
    {
        var s = new AttentionShape(3, 50, 70, 8, 2, 96);
        var mask = MaskSpec.Build("qlen+klen+causal+win(9,-1)+randomh(16,32,2)", s, 7);
        var plan = Plan(KernelElementType.BFloat16, s, new AttentionOptions { Mask = mask });
        var p = plan.Params;
        Assert.That((p.Batch, p.SeqQ, p.SeqK, p.Heads, p.KvHeads, p.HeadDim, p.Group), Is.EqualTo((3, 50, 70, 8, 2, 96, 4)));
        Assert.That((p.Causal, p.WindowLeft, p.WindowRight), Is.EqualTo((1, 9, -1)));
        Assert.That((p.QStrideB, p.QStrideS, p.QStrideH, p.QStrideD), Is.EqualTo((50L * 8 * 96, 8L * 96, 96L, 1L)));
        Assert.That((p.KStrideB, p.KStrideS, p.KStrideH, p.KStrideD), Is.EqualTo((70L * 2 * 96, 2L * 96, 96L, 1L)));
        Assert.That((p.LseStrideB, p.LseStrideH, p.LseStrideS), Is.EqualTo((8L * 50, 50L, 1L)));
        var bm = mask.BlockMask!;
        Assert.That((p.MaskHeads, p.MaskBlockQ, p.MaskBlockK, p.MaskQueryBlocks, p.MaskKeyBlocks),
            Is.EqualTo((8, 16, 32, bm.QueryBlocks, bm.KeyBlocks)));
        Assert.That(plan.Params.KeyLengths, Is.EqualTo((nint)0), "tables are not uploaded yet");

        // Tables: key lengths, query lengths, tile offsets, tile entries, block flags, back to back.
        var t = plan.Tables;
        Assert.That(t.AsSpan(plan.KeyLengthsAt, 3).ToArray(), Is.EqualTo(mask.KeyLengths));
        Assert.That(t.AsSpan(plan.QueryLengthsAt, 3).ToArray(), Is.EqualTo(mask.QueryLengths));
        var traits = AttentionKernelTraits.For(96);
        var (offsets, entries) = AttentionForwardPlanner.BuildTileList(bm, 50, 70, traits.BlockM, traits.BlockN);
        Assert.That(t.AsSpan(plan.TileOffsetsAt, offsets.Length).ToArray(), Is.EqualTo(offsets));
        Assert.That(t.AsSpan(plan.TileEntriesAt, entries.Length).ToArray(), Is.EqualTo(entries));
        Assert.That(plan.BlockKeepAt, Is.EqualTo(plan.TileEntriesAt + entries.Length));
        Assert.That(t.Length, Is.EqualTo(plan.BlockKeepAt + 8 * bm.QueryBlocks * bm.KeyBlocks));
        var flags = bm.ToArray();
        for (int h = 0; h < 8; h++)
            for (int qb = 0; qb < bm.QueryBlocks; qb++)
                for (int kb = 0; kb < bm.KeyBlocks; kb++)
                    Assert.That(t[plan.BlockKeepAt + (h * bm.QueryBlocks + qb) * bm.KeyBlocks + kb], Is.EqualTo(flags[h, qb, kb] ? 1 : 0));

        nint at = 0x1000;
        var withTables = plan.WithTables(at);
        Assert.That(withTables.KeyLengths, Is.EqualTo(at + plan.KeyLengthsAt * 4));
        Assert.That(withTables.QueryLengths, Is.EqualTo(at + plan.QueryLengthsAt * 4));
        Assert.That(withTables.TileOffsets, Is.EqualTo(at + plan.TileOffsetsAt * 4));
        Assert.That(withTables.TileEntries, Is.EqualTo(at + plan.TileEntriesAt * 4));
        Assert.That(withTables.BlockKeep, Is.EqualTo(at + plan.BlockKeepAt * 4));

        var dense = Plan(KernelElementType.BFloat16, s);
        Assert.That(dense.Tables, Is.Empty, "a dense call uploads nothing");
        Assert.That(dense.WithTables(0).KeyLengths, Is.EqualTo((nint)0));
        var simt = Plan(KernelElementType.Float32, s, new AttentionOptions { Mask = mask });
        Assert.That((simt.TileOffsetsAt, simt.TileEntriesAt), Is.EqualTo((-1, -1)), "the SIMT kernel reads block flags only");
        Assert.That(simt.BlockKeepAt, Is.GreaterThanOrEqualTo(0));
    }

    // ---- block-sparse tile lists -------------------------------------------------------------------------------

    [Test]
    public void TileListsEqualABruteForceScanOfTheMask()
    {
        var rng = new Rng(42);
        int[][] tiles = [[64, 64], [128, 64], [64, 32], [16, 16], [48, 80]];
        for (int trial = 0; trial < 300; trial++)
        {
            int sq = rng.Next(1, 300), sk = rng.Next(1, 300), heads = rng.Next(1, 3);
            int bq = rng.Next(1, 70), bk = rng.Next(1, 70);
            double density = rng.NextDouble();
            int qb = (sq + bq - 1) / bq, kb = (sk + bk - 1) / bk;
            var keep = new bool[heads * qb * kb];
            for (int i = 0; i < keep.Length; i++) keep[i] = rng.NextBool(density);
            var mask = new BlockSparseMask(keep, heads, qb, kb, bq, bk);
            int[] tile = tiles[trial % tiles.Length];
            var (offsets, entries) = AttentionForwardPlanner.BuildTileList(mask, sq, sk, tile[0], tile[1]);
            var (bOffsets, bEntries) = BruteForce(mask, sq, sk, tile[0], tile[1]);
            string what = $"trial {trial}: Sq {sq}, Sk {sk}, heads {heads}, blocks {bq}x{bk}, tiles {tile[0]}x{tile[1]}";
            Assert.That(offsets, Is.EqualTo(bOffsets), what);
            Assert.That(entries, Is.EqualTo(bEntries), what);
        }
    }

    [Test]
    public void TilesWithNothingKeptAreAbsentAndFullyKeptOnesAreNotPartial()
    {
        var none = new BlockSparseMask(new bool[4 * 5], 1, 4, 5, 32, 32);
        var (offsets, entries) = AttentionForwardPlanner.BuildTileList(none, 128, 160, 64, 64);
        Assert.That(entries, Is.Empty);
        Assert.That(offsets, Is.All.Zero);

        var dense = BlockSparseMask.Dense(200, 300, 7, 11);
        (offsets, entries) = AttentionForwardPlanner.BuildTileList(dense, 200, 300, 64, 64);
        Assert.That(entries.Length, Is.EqualTo(4 * 5));
        Assert.That(entries.Select(e => e & 1), Is.All.Zero, "every pair kept: no per-element checks");
        Assert.That(offsets, Is.EqualTo(new[] { 0, 5, 10, 15, 20 }));

        // Local (diagonal band) layout: tiles far from the diagonal are skipped.
        var local = BlockSparseMask.Local(512, 512, 64, 64, 1, 0);
        (offsets, entries) = AttentionForwardPlanner.BuildTileList(local, 512, 512, 64, 64);
        for (int mt = 0; mt < 8; mt++)
        {
            var row = entries[offsets[mt]..offsets[mt + 1]].Select(e => e >> 1).ToArray();
            Assert.That(row, Is.EqualTo(Enumerable.Range(Math.Max(0, mt - 1), Math.Min(mt, 1) + 1).ToArray()), $"query tile {mt}");
        }
    }

    private static (int[] Offsets, int[] Entries) BruteForce(BlockSparseMask mask, int sq, int sk, int bm, int bn)
    {
        int mTiles = (sq + bm - 1) / bm, nTiles = (sk + bn - 1) / bn;
        var offsets = new int[mask.Heads * mTiles + 1];
        var entries = new List<int>();
        for (int h = 0; h < mask.Heads; h++)
        {
            for (int mt = 0; mt < mTiles; mt++)
            {
                for (int nt = 0; nt < nTiles; nt++)
                {
                    bool any = false, all = true;
                    for (int i = mt * bm; i < Math.Min(sq, (mt + 1) * bm); i++)
                    {
                        for (int j = nt * bn; j < Math.Min(sk, (nt + 1) * bn); j++)
                        {
                            bool kept = mask.IsKept(h, i / mask.BlockSizeQ, j / mask.BlockSizeK);
                            any |= kept;
                            all &= kept;
                        }
                    }
                    if (any) entries.Add((nt << 1) | (all ? 0 : 1));
                }
                offsets[h * mTiles + mt + 1] = entries.Count;
            }
        }
        return (offsets, [.. entries]);
    }

    // ---- argument checks, as CpuAttention.Forward ---------------------------------------------------------------

    /// <summary>A bad call described by its tensor lengths (BSHD contiguous) and options.</summary>
    public sealed record BadCall(string Name, int[] Q, int[] K, int[] V, int[] O, int[]? Lse = null, string Mask = "none")
    {
        public override string ToString() => Name;
    }

    private static readonly BadCall[] BadCalls =
    [
        new("query rank 3", [2, 8, 64], [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64]),
        new("key rank 5", [2, 8, 2, 64], [2, 8, 2, 64, 1], [2, 8, 2, 64], [2, 8, 2, 64]),
        new("zero-size query", [2, 0, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], [2, 0, 2, 64]),
        new("zero-size value", [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 0, 64], [2, 8, 2, 64]),
        new("value != key", [2, 8, 2, 64], [2, 8, 2, 64], [2, 9, 2, 64], [2, 8, 2, 64]),
        new("batch mismatch", [2, 8, 2, 64], [3, 8, 2, 64], [3, 8, 2, 64], [2, 8, 2, 64]),
        new("head dim mismatch", [2, 8, 2, 64], [2, 8, 2, 32], [2, 8, 2, 32], [2, 8, 2, 64]),
        new("H % Hkv", [2, 8, 3, 64], [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 3, 64]),
        new("output lengths", [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 32]),
        new("lse lengths", [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], Lse: [2, 8, 2]),
        new("lse rank", [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], Lse: [2, 2]),
        new("key lengths count", [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], Mask: "badklen"),
        new("key length too long", [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], Mask: "longklen"),
        new("block mask geometry", [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], Mask: "badblocks"),
        new("block mask heads", [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], [2, 8, 2, 64], Mask: "badheads"),
    ];

    private static AttentionMask BadMask(string name) => name switch
    {
        "badklen" => new AttentionMask { KeyLengths = [1, 2, 3] },
        "longklen" => new AttentionMask { KeyLengths = [1, 9] },
        "badblocks" => new AttentionMask { BlockMask = BlockSparseMask.Dense(8, 16, 4, 4) },
        "badheads" => new AttentionMask { BlockMask = BlockSparseMask.Dense(8, 8, 4, 4, heads: 3) },
        _ => AttentionMask.None,
    };

    private static IEnumerable<TestCaseData> BadCallSource() => BadCalls.Select(c => new TestCaseData(c).SetName($"SameErrorAsCpu({c})"));

    [TestCaseSource(nameof(BadCallSource))]
    public void SameErrorAsCpu(BadCall c)
    {
        var options = new AttentionOptions { Mask = BadMask(c.Mask) };
        Exception? cpu = Catch(() =>
        {
            var q = new float[Math.Max(1, c.Q.Aggregate(1, (a, x) => a * x))];
            var k = new float[Math.Max(1, c.K.Aggregate(1, (a, x) => a * x))];
            var v = new float[Math.Max(1, c.V.Aggregate(1, (a, x) => a * x))];
            var o = new float[Math.Max(1, c.O.Aggregate(1, (a, x) => a * x))];
            var l = c.Lse is null ? null : new float[Math.Max(1, c.Lse.Aggregate(1, (a, x) => a * x))];
            CpuAttention.Forward<float>(Span(q, c.Q), Span(k, c.K), Span(v, c.V), Span(o, c.O), options,
                l is null ? default : Span(l, c.Lse!));
        });
        Exception? gpu = Catch(() => AttentionForwardPlanner.Plan(KernelElementType.Float32, Desc(c.Q), Desc(c.K), Desc(c.V), Desc(c.O),
            c.Lse is null ? null : Desc(c.Lse), options, CudaKernelVariant.Tuned));
        Assert.That(cpu, Is.Not.Null, "the CPU engine rejects the call");
        Assert.That(gpu, Is.Not.Null, "the planner rejects the call");
        Assert.That(gpu!.GetType(), Is.EqualTo(cpu!.GetType()), gpu.Message);
        Assert.That(((ArgumentException)gpu).ParamName, Is.EqualTo(((ArgumentException)cpu).ParamName), gpu.Message);
        Assert.That(gpu.Message, Is.EqualTo(cpu.Message), "same words, same numbers");
    }

    [Test]
    public void AZeroStrideOutputIsRejected()
    {
        var s = new AttentionShape(1, 8, 8, 2, 2, 64);
        var o = new TensorDesc(Base, [1, 8, 2, 64], [8 * 2 * 64, 0, 64, 1]);
        var e = Assert.Throws<ArgumentException>(() => AttentionForwardPlanner.Plan(KernelElementType.Float16, Bshd(1, 8, 2, 64),
            Bshd(1, 8, 2, 64), Bshd(1, 8, 2, 64), o, null, AttentionOptions.Default, CudaKernelVariant.Tuned))!;
        Assert.That(e.ParamName, Is.EqualTo("output"));
        Assert.That(e.Message, Does.Contain("stride 0 on dimension 1"));
        _ = s;
    }

    [Test]
    public void TooManyHeadsOrSequencesForTheGridAreRejected()
    {
        Assert.That(() => Plan(KernelElementType.Float16, new AttentionShape(1, 2, 2, 65536, 65536, 64), lse: false),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("query").And.Message.Contains("65535"));
        Assert.That(() => Plan(KernelElementType.Float16, new AttentionShape(65536, 1, 1, 1, 1, 64), lse: false),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("query").And.Message.Contains("65535"));
        Assert.That(Plan(KernelElementType.Float16, new AttentionShape(65535, 1, 1, 2, 1, 64), lse: false).Launch.Grid.Z, Is.EqualTo(65535u));
    }

    private static TensorDesc Desc(int[] lengths)
    {
        var l = lengths.Select(x => (nint)x).ToArray();
        var s = new nint[l.Length];
        nint stride = 1;
        for (int i = l.Length - 1; i >= 0; i--)
        {
            s[i] = stride;
            stride *= Math.Max(l[i], 1);
        }
        return new TensorDesc(Base, l, s);
    }

    private static TensorSpan<float> Span(float[] data, int[] lengths)
    {
        var l = lengths.Select(x => (nint)x).ToArray();
        // System.Numerics.Tensors 10 wants all-zero strides over an empty array for a zero-length tensor.
        return l.Contains(0) ? new TensorSpan<float>(Array.Empty<float>(), l, new nint[l.Length]) : Views.Strided(data, l, Desc(lengths).Strides);
    }

    private static Exception? Catch(Action a)
    {
        try
        {
            a();
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }
}
