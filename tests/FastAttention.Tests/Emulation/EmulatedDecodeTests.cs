// The paged decode kernels (paged_decode.cu: tuned, plain SIMT, split combine) and the KV append / copy-on-write
// kernels (kv_append.cu) run on the kernel emulator, against the CPU paged cache, CPU decode and the double reference.
// Planning and packing go through the same pure functions the device path uses (PagedDecodeTables, DecodeLaunchPlan,
// BatchAppend.Commit, PagedAppendStaging, KvAppendLaunch): CudaDecode and CudaPagedKvCache only add the uploads and the
// device addresses, which here are host addresses of guarded buffers. Unused pool slots hold NaN, block tables are
// scrambled by filler sequences, destinations start as NaN, guard zones are checked.
using FastAttention.Caching;
using FastAttention.Compilation;
using FastAttention.Cpu.Caching;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Emulation;

[TestFixture]
[Category("Emulated")]
public sealed class EmulatedDecodeTests
{
    private static readonly DecodeCase[] Cases =
    [
        new("f32", [1, 37, 300], 8, 8, 64, 1, false, -1, -1, 8),
        new("f16", [600, 17, 129], 8, 2, 128, 1, true, -1, -1, 16),
        new("bf16", [700, 0, 31], 4, 2, 256, 2, true, -1, -1, 64),
        new("f16", [513, 129], 8, 1, 128, 5, true, 100, 0, 32),
        new("f32", [513, 2], 4, 4, 256, 3, true, 64, -1, 16),
        new("bf16", [777], 8, 8, 64, 3, false, 31, 5, 8),
        new("f16", [257, 256, 255], 4, 4, 64, 4, true, -1, -1, 64, Scale: -0.3f),
        new("bf16", [300, 5], 8, 4, 128, 1, false, -1, -1, 16, Scale: 0.05f, Sigma: 3),
    ];

    private static IEnumerable<TestCaseData> Source()
    {
        string[] variants = ["tuned", "tuned splits=3", "plain"];
        for (int i = 0; i < Cases.Length; i++)
        {
            foreach (string v in variants) yield return new TestCaseData(Cases[i], i, v).SetName($"EmulatedDecode({Cases[i]}, {v})");
        }
    }

    [OneTimeSetUp]
    public void RequireEmulator() => KernelEmulator.Require();

    [TestCaseSource(nameof(Source))]
    public void MatchesCpuDecodeAndReference(DecodeCase c, int index, string variant)
    {
        switch (c.DType)
        {
            case "f32": Run<float>(c, index, variant); break;
            case "f16": Run<Half>(c, index, variant); break;
            default: Run<BFloat16>(c, index, variant); break;
        }
    }

    private static void Run<T>(DecodeCase c, int index, string variant) where T : unmanaged
    {
        var rng = new Rng(9100 + (ulong)index);
        var histories = c.Lengths.Select(length =>
        {
            var h = new TokenHistory<T>(c.Hkv, c.D);
            h.Add(rng.Normal<T>(length * c.Hkv * c.D, c.Sigma), rng.Normal<T>(length * c.Hkv * c.D));
            return h;
        }).ToArray();
        var (cache, ids) = BuildScrambled(histories, c.PageSize, rng);
        CacheTestSupport.PoisonUnused(cache);
        var query = rng.Normal<T>(ids.Length * c.Q * c.H * c.D);
        var options = c.Options;
        var (oe, le, kernel) = DecodeEmulated(cache, ids, query, c.Q, c.H, options, variant);
        var (oc, lc) = CacheTestSupport.Decode(cache, ids, query, c.Q, c.H, options);
        CacheTestSupport.AssertMatchesReference([($"emulated {kernel} {c}", oe, le), ($"CPU {c}", oc, lc)], query, histories, c.Q, c.H, options);
        if (typeof(T) == typeof(float))
        {
            Tolerance.AssertClose(oe, oc.Select(x => (double)x).ToArray(), $"emulated {kernel} vs CPU output (fp32)", [ids.Length, c.Q, c.H, c.D]);
        }
    }

    /// <summary>A CPU paged cache holding <paramref name="histories"/>, appended in random chunks interleaved with filler sequences so pages are scrambled.</summary>
    private static (PagedKvCache<T> Cache, int[] Ids) BuildScrambled<T>(TokenHistory<T>[] histories, int pageSize, Rng rng) where T : unmanaged
    {
        int hkv = histories[0].KvHeads, d = histories[0].HeadDim;
        int pages = histories.Sum(h => (h.Length + pageSize - 1) / pageSize) + 8;
        var cache = new PagedKvCache<T>(pages, pageSize, hkv, d);
        cache.KeyStorage.Fill(Num.FromFloat<T>(float.NaN));
        cache.ValueStorage.Fill(Num.FromFloat<T>(float.NaN));
        int filler = cache.CreateSequence();
        var ids = histories.Select(_ => cache.CreateSequence()).ToArray();
        var done = new int[histories.Length];
        int fillerTokens = 0;
        while (Enumerable.Range(0, histories.Length).Any(b => done[b] < histories[b].Length))
        {
            for (int b = 0; b < histories.Length; b++)
            {
                int n = Math.Min(histories[b].Length - done[b], rng.Next(1, 3 * pageSize));
                if (n <= 0) continue;
                cache.Append(ids[b], Views.Strided(histories[b].Slice(true, done[b], n), [n, hkv, d], [hkv * d, d, 1]),
                    Views.Strided(histories[b].Slice(false, done[b], n), [n, hkv, d], [hkv * d, d, 1]));
                done[b] += n;
            }
            if (fillerTokens < 4 * pageSize && cache.Allocator.FreePages > histories.Length * 3)
            {
                var junk = rng.Normal<T>(pageSize * hkv * d, 50);
                cache.Append(filler, Views.Strided(junk, [pageSize, hkv, d], [hkv * d, d, 1]), Views.Strided(junk, [pageSize, hkv, d], [hkv * d, d, 1]));
                fillerTokens += pageSize;
            }
        }
        cache.Free(filler);
        return (cache, ids);
    }

    /// <summary>Decode on the emulator: measure, plan, pack, bind and launch as CudaDecode does for a paged cache.</summary>
    private static (float[] Output, float[] Lse, string Kernel) DecodeEmulated<T>(PagedKvCache<T> cache, int[] ids, T[] query, int q, int heads,
        AttentionOptions options, string variant) where T : unmanaged
    {
        int batch = ids.Length, hkv = cache.KvHeads, d = cache.HeadDim;
        var type = KernelElementTypes.Of<T>();
        using var kPool = new HostBuffer<T>(cache.KeyStorage);
        using var vPool = new HostBuffer<T>(cache.ValueStorage);
        using var qBuf = new HostBuffer<T>(query);
        using var oBuf = new HostBuffer<T>(Num.Filled<T>(batch * q * heads * d, float.NaN));
        using var lseBuf = new HostBuffer<float>(Num.Filled<float>(batch * heads * q, float.NaN));
        var tables = PagedDecodeTables.Measure(cache.Allocator, ids);
        var decodeOptions = variant switch
        {
            "plain" => new GpuDecodeOptions { Kernel = DecodeKernel.Plain },
            "tuned splits=3" => new GpuDecodeOptions { Splits = 3 },
            _ => GpuDecodeOptions.Default,
        };
        var pool = KvPoolGeometry.Paged(cache.Allocator.PageCount, cache.PageSize, hkv, d);
        var operands = new DecodeOperands(
            qBuf.Pointer, new Strides3((long)q * heads * d, (long)heads * d, d),
            oBuf.Pointer, new Strides3((long)q * heads * d, (long)heads * d, d),
            lseBuf.Pointer, new Strides3((long)heads * q, q, 1),
            kPool.Pointer, vPool.Pointer, 0, tables.TableStride, 0);
        // A small device (4 SMs, 2 resident blocks each) so the planner's own split choice is exercised at these sizes.
        var plan = DecodeLaunchPlan.Create(type, pool, batch, q, heads, tables.MaxLength, options.ResolveScale(d), options.Mask, decodeOptions,
            new DecodeDevice(4, 2), operands);
        using var staged = new HostBuffer<int>(tables.Ints);
        staged.Poison();
        tables.Pack(cache.Allocator, ids, staged.Span);
        plan = tables.Bind(plan, staged.Pointer);
        using var scratch = new HostBuffer<float>(checked((int)plan.ScratchElements));
        scratch.Poison();
        var p = plan.Parameters(scratch.Pointer);
        EmulatedModule module = KernelEmulator.Load(KernelRegistry.PagedDecode(type, d));
        var args = new KernelArguments();
        args.Add(p);
        module.Launch(plan.KernelName, plan.Config, ref args);
        if (plan.CombineConfig is { } combineConfig)
        {
            var combine = new KernelArguments();
            combine.Add(p);
            module.Launch(plan.CombineName, combineConfig, ref combine);
        }
        if (variant == "tuned splits=3" && tables.MaxLength > 2 * cache.PageSize)
        {
            Assert.That(plan.Split.Splits, Is.GreaterThan(1), "a forced split over more than two pages splits the context");
        }
        kPool.Check("k pool");
        vPool.Check("v pool");
        qBuf.Check("query");
        oBuf.Check("output");
        lseBuf.Check("logSumExp");
        staged.Check("tables");
        scratch.Check("split scratch");
        return (Num.ToFloats<T>(oBuf.Span), lseBuf.ToArray(), $"{plan.KernelName} splits={plan.Split.Splits}");
    }

    [TestCase("f16", 64, 16)]
    [TestCase("bf16", 128, 8)]
    [TestCase("f32", 256, 32)]
    public void AppendAndCopyOnWriteKernelsMatchTheCpuCache(string dtype, int d, int pageSize)
    {
        switch (dtype)
        {
            case "f32": AppendRun<float>(d, pageSize); break;
            case "f16": AppendRun<Half>(d, pageSize); break;
            default: AppendRun<BFloat16>(d, pageSize); break;
        }
    }

    /// <summary>
    /// Batched and ragged appends, with a fork mid-page (copy-on-write), through fa_kv_copy_pages and fa_kv_append
    /// into an emulated pool; the CPU cache receives the same appends. Every live slot must match bit for bit and
    /// every other slot must still hold the NaN it started with.
    /// </summary>
    private static void AppendRun<T>(int d, int pageSize) where T : unmanaged
    {
        const int hkv = 2, pages = 24;
        var rng = new Rng(4242 + (ulong)d);
        var cpu = new PagedKvCache<T>(pages, pageSize, hkv, d);
        var allocator = new PageAllocator(pages, pageSize);
        long poolElements = (long)pages * pageSize * hkv * d;
        using var kPool = new HostBuffer<T>(Num.Filled<T>((int)poolElements, float.NaN));
        using var vPool = new HostBuffer<T>(Num.Filled<T>((int)poolElements, float.NaN));
        EmulatedModule module = KernelEmulator.Load(KernelRegistry.KvAppend(KernelElementTypes.Of<T>(), d));
        int[] ids = [cpu.CreateSequence(), cpu.CreateSequence(), cpu.CreateSequence()];
        Assert.That(ids, Is.EqualTo(new[] { allocator.CreateSequence(), allocator.CreateSequence(), allocator.CreateSequence() }));
        int pageCopies = 0;

        void Append(int[] sequences, int[] counts, bool ragged)
        {
            int total = counts.Sum(), n = counts.Max();
            // Batched source [B, n, Hkv, D] (entries use their first counts[b] tokens) or ragged [N, Hkv, D].
            int rowsOfSource = ragged ? total : sequences.Length * n;
            var k = rng.Normal<T>(rowsOfSource * hkv * d);
            var v = rng.Normal<T>(rowsOfSource * hkv * d);
            int token = 0;
            for (int b = 0; b < sequences.Length; b++)
            {
                int first = ragged ? token : b * n;
                if (counts[b] > 0) cpu.Append(sequences[b], Views.Strided(k[(first * hkv * d)..((first + counts[b]) * hkv * d)], [counts[b], hkv, d], [hkv * d, d, 1]),
                    Views.Strided(v[(first * hkv * d)..((first + counts[b]) * hkv * d)], [counts[b], hkv, d], [hkv * d, d, 1]));
                token += counts[b];
            }
            var placements = BatchAppend.Commit(allocator, sequences, counts);
            var staging = PagedAppendStaging.Measure(allocator, sequences, placements);
            using var tables = new HostBuffer<int>(staging.Ints);
            tables.Poison();
            staging.Pack(allocator, sequences, placements, tables.Span);
            using var kSrc = new HostBuffer<T>(k);
            using var vSrc = new HostBuffer<T>(v);
            var pool = KvPoolGeometry.Paged(pages, pageSize, hkv, d);
            if (staging.CopyLaunch(pool, kPool.Pointer, vPool.Pointer, tables.Pointer) is { } copy)
            {
                var cargs = new KernelArguments();
                cargs.Add(copy.Parameters);
                module.Launch(KvAppendLaunch.CopyKernelName(KernelElementTypes.Of<T>(), d), copy.Config, ref cargs);
                pageCopies += staging.Copies;
            }
            // The batched source [B, n, Hkv, D] and the ragged one [N, Hkv, D], with the strides TokenSource.Require reads off them.
            var src = ragged ? new TokenSource(0, (long)hkv * d, d) : new TokenSource((long)n * hkv * d, (long)hkv * d, d);
            var append = staging.AppendLaunch(pool, kPool.Pointer, vPool.Pointer, kSrc.Pointer, vSrc.Pointer, src, ragged, tables.Pointer);
            Assert.That(append, Is.Not.Null, "every batch here appends tokens");
            var aargs = new KernelArguments();
            aargs.Add(append!.Value.Parameters);
            module.Launch(KvAppendLaunch.AppendKernelName(KernelElementTypes.Of<T>(), d), append.Value.Config, ref aargs);
            kSrc.Check("k source");
            vSrc.Check("v source");
            tables.Check("tables");
        }

        Append(ids, [pageSize + 3, 1, 2 * pageSize], ragged: false);
        Append(ids, [6, pageSize - 1, 0], ragged: true);
        // Fork mid-page: the next appends to the parent and the child each copy the shared last page first.
        int child = cpu.Fork(ids[0]);
        Assert.That(allocator.Fork(ids[0]), Is.EqualTo(child));
        Append([ids[0], child, ids[2]], [3, 2 * pageSize + 1, 7], ragged: true);
        Append([child, ids[1]], [4, 4], ragged: false);
        kPool.Check("k pool");
        vPool.Check("v pool");
        Assert.That(pageCopies, Is.Positive, "the fork made the copy-on-write kernel run");

        Assert.That(CacheTestSupport.Snapshot(allocator), Is.EqualTo(CacheTestSupport.Snapshot(cpu.Allocator)), "same page bookkeeping");
        CacheTestSupport.PoisonUnused(cpu);
        var expectedK = cpu.KeyStorage.ToArray();
        var expectedV = cpu.ValueStorage.ToArray();
        var k2 = kPool.ToArray();
        var v2 = vPool.ToArray();
        foreach (int seq in ids.Append(child))
        {
            var table = allocator.BlockTable(seq);
            int length = allocator.Length(seq);
            for (int pos = 0; pos < length; pos++)
            {
                for (int h = 0; h < hkv; h++)
                {
                    long offset = h * (long)pages * pageSize * d + (long)table[pos / pageSize] * pageSize * d + (long)(pos % pageSize) * d;
                    CacheTestSupport.AssertSameBits<T>(k2.AsSpan((int)offset, d), expectedK.AsSpan((int)offset, d), $"key of sequence {seq}, position {pos}, head {h}");
                    CacheTestSupport.AssertSameBits<T>(v2.AsSpan((int)offset, d), expectedV.AsSpan((int)offset, d), $"value of sequence {seq}, position {pos}, head {h}");
                }
            }
        }
        var used = CacheTestSupport.UsedSlots(allocator);
        for (int page = 0; page < pages; page++)
        {
            for (int h = 0; h < hkv; h++)
            {
                long from = ((long)(h * pages + page) * pageSize + used[page]) * d, to = ((long)(h * pages + page) * pageSize + pageSize) * d;
                for (long i = from; i < to; i++)
                {
                    Assert.That(float.IsNaN(Num.ToFloat(k2[i])) && float.IsNaN(Num.ToFloat(v2[i])), Is.True, $"unused slot element {i} (page {page}, head {h}) was written");
                }
            }
        }
    }
}
