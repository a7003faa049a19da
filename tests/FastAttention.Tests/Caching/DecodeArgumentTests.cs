// Bad decode arguments: each is rejected with an ArgumentException-family exception naming the argument
// and the numbers, before anything is written (output and LSE keep their sentinel).

using FastAttention.Cpu.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Caching;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class DecodeArgumentTests
{
    private const float Sentinel = 12345f;
    private const int B = 2, Q = 3, H = 4, Hkv = 2, D = 32;

    /// <summary>One decode call over sentinel-filled destinations, every length adjustable; paged or contiguous.</summary>
    private sealed class Call
    {
        public bool Paged { get; init; }
        public nint[] QueryLengths { get; init; } = [B, Q, H, D];
        public nint[] OutputLengths { get; init; } = [B, Q, H, D];
        public nint[]? LseLengths { get; init; } = [B, H, Q];
        public int[]? Sequences { get; init; }
        public AttentionOptions? Options { get; init; }

        public float[] Output = [];
        public float[] Lse = [];

        public void Invoke()
        {
            var rng = new Rng(70);
            var q = rng.Normal<float>((int)Product(QueryLengths));
            Output = Num.Filled<float>((int)Math.Max(1, Product(OutputLengths)), Sentinel);
            Lse = Num.Filled<float>((int)Math.Max(1, LseLengths is null ? 1 : Product(LseLengths)), Sentinel);
            var lse = LseLengths is null ? default : View(Lse, LseLengths);
            if (Paged)
            {
                var cache = new PagedKvCache<float>(8, 4, Hkv, D);
                int s0 = cache.CreateSequence(), s1 = cache.CreateSequence(), dead = cache.CreateSequence();
                var k = rng.Normal<float>(5 * Hkv * D);
                var kv = Views.Strided(k, [5, Hkv, D], [Hkv * D, D, 1]);
                cache.Append(s0, kv, kv);
                cache.Append(s1, kv, kv);
                cache.Free(dead);
                int[] sequences = Sequences?.Select(x => x switch { -100 => dead, _ => x }).ToArray() ?? [s0, s1];
                CpuAttention.Decode<float>(View(q, QueryLengths), cache, sequences, View(Output, OutputLengths), Options, lse);
            }
            else
            {
                var cache = new KvCache<float>(B, 8, Hkv, D);
                var k = rng.Normal<float>(B * 5 * Hkv * D);
                var kv = Views.Bshd(k, B, 5, Hkv, D);
                cache.Append(kv, kv);
                CpuAttention.Decode<float>(View(q, QueryLengths), cache, View(Output, OutputLengths), Options, lse);
            }
        }

        public void AssertNothingWritten()
        {
            Assert.That(Output, Is.All.EqualTo(Sentinel), "output must be untouched");
            Assert.That(Lse, Is.All.EqualTo(Sentinel), "logSumExp must be untouched");
        }

        private static long Product(nint[] lengths) => lengths.Aggregate(1L, (a, n) => a * n);

        private static TensorSpan<float> View(float[] data, nint[] lengths)
        {
            if (Product(lengths) == 0) return new TensorSpan<float>(data, lengths, new nint[lengths.Length]);
            var strides = new nint[lengths.Length];
            nint stride = 1;
            for (int i = lengths.Length - 1; i >= 0; i--)
            {
                strides[i] = stride;
                stride *= lengths[i];
            }
            return Views.Strided(data, lengths, strides);
        }
    }

    private static void Rejects<TEx>(Call call, string param, params string[] parts) where TEx : ArgumentException
    {
        var ex = Assert.Throws<TEx>(call.Invoke)!;
        Assert.Multiple(() =>
        {
            Assert.That(ex.ParamName, Is.EqualTo(param), ex.Message);
            foreach (string part in parts) Assert.That(ex.Message, Does.Contain(part), "message");
        });
        call.AssertNothingWritten();
    }

    [TestCase(false)]
    [TestCase(true)]
    public void ValidCallOfTheHarnessSucceeds(bool paged)
    {
        var call = new Call { Paged = paged };
        call.Invoke();
        Assert.That(call.Output, Has.None.EqualTo(Sentinel));
        Assert.That(call.Lse, Has.None.EqualTo(Sentinel));
        Assert.That(call.Output, Has.None.NaN);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void QueryOfWrongRank(bool paged) =>
        Rejects<ArgumentException>(new Call { Paged = paged, QueryLengths = [B, Q, H * D] }, "query", "rank 3");

    [TestCase(false)]
    [TestCase(true)]
    public void QueryBatchDiffersFromTheCache(bool paged) =>
        Rejects<ArgumentException>(new Call { Paged = paged, QueryLengths = [B + 1, Q, H, D], OutputLengths = [B + 1, Q, H, D], LseLengths = [B + 1, H, Q] },
            "query", "[3, 3, 4, 32]", "B = 2");

    [TestCase(false)]
    [TestCase(true)]
    public void QueryHeadDimDiffersFromTheCache(bool paged) =>
        Rejects<ArgumentException>(new Call { Paged = paged, QueryLengths = [B, Q, H, 16], OutputLengths = [B, Q, H, 16] }, "query", "[2, 3, 4, 16]", "D = 32");

    [TestCase(false, 3)]
    [TestCase(true, 5)]
    [TestCase(false, 1)]
    public void HeadsNotAMultipleOfKvHeads(bool paged, int heads) =>
        Rejects<ArgumentException>(new Call { Paged = paged, QueryLengths = [B, Q, heads, D], OutputLengths = [B, Q, heads, D], LseLengths = [B, heads, Q] },
            "query", $"[2, 3, {heads}, 32]", "Hkv = 2");

    [TestCase(false)]
    [TestCase(true)]
    public void ZeroQueryRows(bool paged) =>
        Rejects<ArgumentException>(new Call { Paged = paged, QueryLengths = [B, 0, H, D], OutputLengths = [B, 0, H, D], LseLengths = [B, H, 0] }, "query", "q >= 1");

    [TestCase(false, new[] { 2, 3, 4, 16 })]
    [TestCase(true, new[] { 2, 4, 3, 32 })]
    [TestCase(false, new[] { 1, 3, 4, 32 })]
    [TestCase(true, new[] { 2, 3, 128 })]
    public void OutputOfWrongLengths(bool paged, int[] lengths) =>
        Rejects<ArgumentException>(new Call { Paged = paged, OutputLengths = [.. lengths.Select(x => (nint)x)] },
            "output", "[2, 3, 4, 32]", $"[{string.Join(", ", lengths)}]");

    [TestCase(false, new[] { 2, 3, 4 })]
    [TestCase(true, new[] { 2, 4, 2 })]
    [TestCase(false, new[] { 2, 4, 3, 1 })]
    [TestCase(true, new[] { 1, 4, 3 })]
    public void LseOfWrongLengths(bool paged, int[] lengths) =>
        Rejects<ArgumentException>(new Call { Paged = paged, LseLengths = [.. lengths.Select(x => (nint)x)] },
            "logSumExp", "[2, 4, 3]", $"[{string.Join(", ", lengths)}]");

    private static IEnumerable<TestCaseData> MaskFields()
    {
        foreach (bool paged in new[] { false, true })
        {
            yield return new TestCaseData(paged, new AttentionMask { KeyLengths = [5, 5] }).SetName($"MaskWithKeyLengths(paged {paged})");
            yield return new TestCaseData(paged, new AttentionMask { QueryLengths = [3, 3], Causal = true }).SetName($"MaskWithQueryLengths(paged {paged})");
            yield return new TestCaseData(paged, new AttentionMask { BlockMask = BlockSparseMask.Dense(Q, 5, 1, 1) }).SetName($"MaskWithBlockMask(paged {paged})");
        }
    }

    [TestCaseSource(nameof(MaskFields))]
    public void MaskFieldsDecodeDoesNotTake(bool paged, AttentionMask mask) =>
        Rejects<ArgumentException>(new Call { Paged = paged, Options = new AttentionOptions { Mask = mask } }, "options", "KeyLengths", "BlockMask");

    [TestCase(-100)]
    [TestCase(57)]
    [TestCase(-1)]
    public void DeadSequenceId(int id) =>
        Rejects<ArgumentException>(new Call { Paged = true, Sequences = [0, id] }, "sequences", "sequences[1]");

    [Test]
    public void SequenceCountDiffersFromQueryBatch() =>
        Rejects<ArgumentException>(new Call { Paged = true, Sequences = [0] }, "query", "B = 1");

    [Test]
    public void HeadDimAboveTheMaximumIsRejected()
    {
        int d = CpuAttention.MaxHeadDim + 8;
        var cache = new KvCache<float>(1, 4, 1, d);
        var q = new float[2 * d];
        var o = Num.Filled<float>(2 * d, Sentinel);
        var ex = Assert.Throws<ArgumentException>(() => CpuAttention.Decode<float>(Views.Bshd(q, 1, 1, 2, d), cache, Views.Bshd(o, 1, 1, 2, d)))!;
        Assert.That(ex.ParamName, Is.EqualTo("query"));
        Assert.That(ex.Message, Does.Contain($"{d}").And.Contain($"{CpuAttention.MaxHeadDim}"));
        Assert.That(o, Is.All.EqualTo(Sentinel));
    }

    [Test]
    public void OutputWithOverlappingStrideIsRejected()
    {
        var cache = new KvCache<float>(B, 8, Hkv, D);
        var q = new float[B * Q * H * D];
        var o = Num.Filled<float>(Q * H * D, Sentinel);
        var ex = Assert.Throws<ArgumentException>(() => CpuAttention.Decode<float>(Views.Bshd(q, B, Q, H, D), cache,
            new TensorSpan<float>(o, [B, Q, H, D], [0, H * D, D, 1])))!;
        Assert.That(ex.ParamName, Is.EqualTo("output"));
        Assert.That(ex.Message, Does.Contain("stride 0"));
        Assert.That(o, Is.All.EqualTo(Sentinel));
    }

    [Test]
    public void NullCacheIsRejected()
    {
        var o = Num.Filled<float>(B * Q * H * D, Sentinel);
        var q = new float[B * Q * H * D];
        Assert.Throws<ArgumentNullException>(() =>
            CpuAttention.Decode<float>(Views.Bshd(q, B, Q, H, D), (KvCache<float>)null!, Views.Bshd(o, B, Q, H, D)));
        Assert.Throws<ArgumentNullException>(() =>
            CpuAttention.Decode<float>(Views.Bshd(q, B, Q, H, D), (PagedKvCache<float>)null!, [0, 1], Views.Bshd(o, B, Q, H, D)));
        Assert.That(o, Is.All.EqualTo(Sentinel));
    }

    /// <summary>
    /// A paged decode of zero sequences (an idle step of a serving loop): nothing to compute, so it must
    /// either return without work or reject the empty batch with an ArgumentException; it must not fail
    /// with an unrelated exception. System.Numerics.Tensors only accepts all-zero strides on a tensor with
    /// a zero-length axis, and the output check rejects stride 0 on axes longer than 1, so q = H = D = 1
    /// is the shape that reaches the engine.
    /// </summary>
    [Test]
    public void EmptyBatchIsANoOpOrAnArgumentException()
    {
        var cache = new PagedKvCache<float>(4, 4, 1, 1);
        nint[] zero = [0, 1, 1, 1];
        var q = new TensorSpan<float>(Array.Empty<float>(), zero, new nint[4]);
        var o = new TensorSpan<float>(Array.Empty<float>(), zero, new nint[4]);
        try
        {
            CpuAttention.Decode<float>(q, cache, ReadOnlySpan<int>.Empty, o);
        }
        catch (ArgumentException)
        {
            // acceptable: an empty batch rejected up front
        }
    }
}
