// Bad arguments: each is rejected with an ArgumentException-family exception that names the argument
// and the offending numbers, before any output is written.

using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Cpu;

/// <summary>One Forward call over sentinel-filled destinations, with every length adjustable.</summary>
internal sealed class ForwardCall<T> where T : unmanaged
{
    public const float Sentinel = 12345f;

    public nint[] QueryLengths { get; init; } = [2, 5, 4, 32];
    public nint[] KeyLengths { get; init; } = [2, 7, 2, 32];
    public nint[]? ValueLengths { get; init; }
    public nint[]? OutputLengths { get; init; }
    public nint[]? OutputStrides { get; init; }
    public nint[]? LseLengths { get; init; }
    public nint[]? ProbabilityLengths { get; init; }
    public AttentionOptions? Options { get; init; }

    private T[]? _o;
    private float[]? _lse, _p;

    public void Invoke()
    {
        var oLengths = OutputLengths ?? [QueryLengths[0], QueryLengths[1], QueryLengths[2], QueryLengths[^1]];
        var q = Data(QueryLengths);
        var k = Data(KeyLengths);
        var v = Data(ValueLengths ?? KeyLengths);
        _o = Num.Filled<T>((int)Math.Max(Product(oLengths), 1), Sentinel);
        _lse = LseLengths is null ? null : Num.Filled<float>((int)Math.Max(Product(LseLengths), 1), Sentinel);
        _p = ProbabilityLengths is null ? null : Num.Filled<float>((int)Math.Max(Product(ProbabilityLengths), 1), Sentinel);
        CpuAttention.Forward<T>(
            View(q, QueryLengths), View(k, KeyLengths), View(v, ValueLengths ?? KeyLengths),
            OutputStrides is null ? View(_o, oLengths) : new TensorSpan<T>(_o, oLengths, OutputStrides),
            Options,
            _lse is null ? default : View(_lse, LseLengths!),
            _p is null ? default : View(_p, ProbabilityLengths!));
    }

    public float[] Output => Num.ToFloats<T>(_o);
    public float[]? LogSumExp => _lse;
    public float[]? Probabilities => _p;

    public void AssertNothingWritten()
    {
        float s = Num.Round<T>(Sentinel);
        Assert.That(_o, Is.Not.Null, "the call was made");
        Assert.That(Num.ToFloats<T>(_o), Is.All.EqualTo(s), "output must be untouched");
        if (_lse is not null) Assert.That(_lse, Is.All.EqualTo(Sentinel), "logSumExp must be untouched");
        if (_p is not null) Assert.That(_p, Is.All.EqualTo(Sentinel), "probabilities must be untouched");
    }

    private static T[] Data(nint[] lengths) => new Rng(5).Normal<T>((int)Product(lengths));

    public static long Product(nint[] lengths) => lengths.Aggregate(1L, (a, n) => a * n);

    /// <summary>Contiguous view; a tensor with a zero-length dimension gets all-zero strides (what the Tensors library accepts).</summary>
    public static TensorSpan<TE> View<TE>(TE[] data, nint[] lengths)
    {
        if (Product(lengths) == 0) return new TensorSpan<TE>(data, lengths, new nint[lengths.Length]);
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

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class ArgumentValidationTests
{
    private static TEx Rejects<TEx>(Action call, string paramName, params string[] messageParts) where TEx : ArgumentException
    {
        var ex = Assert.Throws<TEx>(call)!;
        Assert.Multiple(() =>
        {
            Assert.That(ex.ParamName, Is.EqualTo(paramName), $"ParamName of: {ex.Message}");
            foreach (string part in messageParts) Assert.That(ex.Message, Does.Contain(part), "message");
        });
        return ex;
    }

    private static void RejectsForward(ForwardCall<float> call, string paramName, params string[] messageParts)
    {
        Rejects<ArgumentException>(call.Invoke, paramName, messageParts);
        call.AssertNothingWritten();
    }

    [Test]
    public void ValidCallOfTheHarnessSucceeds()
    {
        // The harness itself is sound: with nothing wrong, the call succeeds and writes the output.
        var call = new ForwardCall<float> { LseLengths = [2, 4, 5], ProbabilityLengths = [2, 4, 5, 7] };
        call.Invoke();
        Assert.That(call.Output, Has.None.EqualTo(ForwardCall<float>.Sentinel), "output written");
        Assert.That(call.LogSumExp, Has.None.EqualTo(ForwardCall<float>.Sentinel), "logSumExp written");
        Assert.That(call.Probabilities, Has.None.EqualTo(ForwardCall<float>.Sentinel), "probabilities written");
    }

    [Test]
    public void ValueLengthsDifferFromKey() =>
        RejectsForward(new ForwardCall<float> { ValueLengths = [2, 6, 2, 32] }, "value", "[2, 6, 2, 32]", "[2, 7, 2, 32]");

    [Test]
    public void BatchMismatch() =>
        RejectsForward(new ForwardCall<float> { KeyLengths = [3, 7, 2, 32] }, "key", "3", "2", "batch");

    [Test]
    public void HeadDimMismatch() =>
        RejectsForward(new ForwardCall<float> { KeyLengths = [2, 7, 2, 16] }, "key", "16", "32");

    [TestCase(3, 2)]
    [TestCase(4, 3)]
    [TestCase(2, 4)]
    public void HeadsNotAMultipleOfKvHeads(int h, int hkv) =>
        RejectsForward(new ForwardCall<float> { QueryLengths = [2, 5, h, 32], KeyLengths = [2, 7, hkv, 32] }, "key", $"{h}", $"{hkv}");

    [Test]
    public void UnsupportedElementType()
    {
        var o = new double[2 * 5 * 4 * 32];
        Array.Fill(o, 12345.0);
        Rejects<ArgumentException>(() =>
        {
            var q = new double[2 * 5 * 4 * 32];
            var k = new double[2 * 7 * 2 * 32];
            CpuAttention.Forward<double>(
                ForwardCall<double>.View(q, [2, 5, 4, 32]), ForwardCall<double>.View(k, [2, 7, 2, 32]), ForwardCall<double>.View(k, [2, 7, 2, 32]),
                ForwardCall<double>.View(o, [2, 5, 4, 32]));
        }, "query", "Double");
        Assert.That(o, Is.All.EqualTo(12345.0));
    }

    [TestCase("query", 0)]
    [TestCase("query", 1)]
    [TestCase("query", 2)]
    [TestCase("query", 3)]
    [TestCase("key", 1)]
    [TestCase("key", 2)]
    [TestCase("value", 1)]
    [TestCase("value", 3)]
    public void ZeroSizeDimension(string tensor, int dim)
    {
        // A [.., 0, ..] tensor over an empty array with all-zero strides is what System.Numerics.Tensors 10 accepts.
        nint[] q = [2, 5, 4, 32], k = [2, 7, 2, 32], v = [2, 7, 2, 32];
        (tensor == "query" ? q : tensor == "key" ? k : v)[dim] = 0;
        RejectsForward(new ForwardCall<float> { QueryLengths = q, KeyLengths = k, ValueLengths = v, OutputLengths = [2, 5, 4, 32] },
            tensor, $"dimension {dim}", "size 0");
    }

    [Test]
    public void QueryOfWrongRank() =>
        RejectsForward(new ForwardCall<float> { QueryLengths = [2, 5, 128], OutputLengths = [2, 5, 4, 32] }, "query", "rank 3", "[2, 5, 128]");

    [Test]
    public void KeyOfWrongRank() =>
        RejectsForward(new ForwardCall<float> { KeyLengths = [2, 7, 2, 32, 1] }, "key", "rank 5");

    [TestCase(new[] { 2, 5, 4, 16 })]
    [TestCase(new[] { 2, 4, 5, 32 })]
    [TestCase(new[] { 1, 5, 4, 32 })]
    [TestCase(new[] { 2, 5, 128 })]
    public void OutputOfWrongLengths(int[] lengths)
    {
        nint[] l = [.. lengths.Select(x => (nint)x)];
        RejectsForward(new ForwardCall<float> { OutputLengths = l }, "output", "[2, 5, 4, 32]", $"[{string.Join(", ", lengths)}]");
    }

    [Test]
    public void OutputWithOverlappingStride() =>
        RejectsForward(new ForwardCall<float> { OutputLengths = [2, 5, 4, 32], OutputStrides = [0, 128, 32, 1] }, "output", "stride 0", "dimension 0");

    [TestCase(new[] { 2, 5, 4 })]
    [TestCase(new[] { 2, 4, 6 })]
    [TestCase(new[] { 2, 4, 5, 1 })]
    public void LogSumExpOfWrongLengths(int[] lengths)
    {
        nint[] l = [.. lengths.Select(x => (nint)x)];
        RejectsForward(new ForwardCall<float> { LseLengths = l }, "logSumExp", "[2, 4, 5]", $"[{string.Join(", ", lengths)}]");
    }

    [TestCase(new[] { 2, 4, 5, 6 })]
    [TestCase(new[] { 2, 4, 7, 5 })]
    [TestCase(new[] { 2, 5, 4, 7 })]
    [TestCase(new[] { 2, 4, 5 })]
    public void ProbabilitiesOfWrongLengths(int[] lengths)
    {
        nint[] l = [.. lengths.Select(x => (nint)x)];
        RejectsForward(new ForwardCall<float> { LseLengths = [2, 4, 5], ProbabilityLengths = l }, "probabilities", "[2, 4, 5, 7]", $"[{string.Join(", ", lengths)}]");
    }

    [Test]
    public void KeyLengthsOfWrongCount() =>
        RejectsForward(new ForwardCall<float> { Options = new AttentionOptions { Mask = new AttentionMask { KeyLengths = [7] } }, LseLengths = [2, 4, 5] },
            "options", "KeyLengths", "1", "2");

    [TestCase(8)]
    [TestCase(-1)]
    [TestCase(int.MinValue)]
    public void KeyLengthOutOfRange(int length) =>
        RejectsForward(new ForwardCall<float> { Options = new AttentionOptions { Mask = new AttentionMask { KeyLengths = [7, length] } }, LseLengths = [2, 4, 5] },
            "options", $"KeyLengths[1] = {length}", "7");

    [Test]
    public void QueryLengthsOfWrongCount() =>
        RejectsForward(new ForwardCall<float> { Options = new AttentionOptions { Mask = new AttentionMask { QueryLengths = [5, 5, 5] } } },
            "options", "QueryLengths", "3", "2");

    [TestCase(6)]
    [TestCase(-2)]
    public void QueryLengthOutOfRange(int length) =>
        RejectsForward(new ForwardCall<float> { Options = new AttentionOptions { Mask = new AttentionMask { QueryLengths = [length, 5] } }, ProbabilityLengths = [2, 4, 5, 7] },
            "options", $"QueryLengths[0] = {length}", "5");

    [Test]
    public void BlockMaskBuiltForAnotherQueryLength() =>
        // Built for Sq = 9: ceil(9/2) = 5 query blocks, but Sq = 5 needs 3.
        RejectsForward(new ForwardCall<float> { Options = new AttentionOptions { Mask = new AttentionMask { BlockMask = BlockSparseMask.Local(9, 7, 2, 2, 1, 0) } }, LseLengths = [2, 4, 5] },
            "options", "[5 x 4]", "Sq = 5", "3");

    [Test]
    public void BlockMaskBuiltForAnotherKeyLength() =>
        RejectsForward(new ForwardCall<float> { Options = new AttentionOptions { Mask = new AttentionMask { BlockMask = BlockSparseMask.Dense(5, 20, 4, 4) } } },
            "options", "[2 x 5]", "Sk = 7", "2");

    [TestCase(2)]
    [TestCase(8)]
    public void BlockMaskWithWrongHeadCount(int heads) =>
        RejectsForward(new ForwardCall<float> { Options = new AttentionOptions { Mask = new AttentionMask { BlockMask = BlockSparseMask.Dense(5, 7, 4, 4, heads) } } },
            "options", $"{heads} heads", "4");

    [Test]
    public void HeadDimAboveMaximum()
    {
        int d = CpuAttention.MaxHeadDim + 1;
        RejectsForward(new ForwardCall<float> { QueryLengths = [1, 3, 2, d], KeyLengths = [1, 4, 2, d] }, "query", $"{d}", $"{CpuAttention.MaxHeadDim}");
    }

    [Test]
    public void HalfAndBFloat16CallsAreCheckedToo()
    {
        var half = new ForwardCall<Half> { KeyLengths = [2, 7, 3, 32] };
        Rejects<ArgumentException>(half.Invoke, "key", "4", "3");
        half.AssertNothingWritten();
        var bf16 = new ForwardCall<BFloat16> { OutputLengths = [2, 5, 4, 31] };
        Rejects<ArgumentException>(bf16.Invoke, "output", "[2, 5, 4, 31]");
        bf16.AssertNothingWritten();
    }

    // ---- options and mask init validation ----

    [TestCase(-2)]
    [TestCase(-100)]
    [TestCase(int.MinValue)]
    public void WindowBelowMinusOne(int w)
    {
        Rejects<ArgumentOutOfRangeException>(() => _ = new AttentionMask { WindowLeft = w }, "WindowLeft", $"{w}");
        Rejects<ArgumentOutOfRangeException>(() => _ = new AttentionMask { WindowRight = w }, "WindowRight", $"{w}");
        Rejects<ArgumentOutOfRangeException>(() => AttentionMask.SlidingWindow(w, 3), "WindowLeft", $"{w}");
        Rejects<ArgumentOutOfRangeException>(() => AttentionMask.SlidingWindow(3, w, causal: true), "WindowRight", $"{w}");
        Rejects<ArgumentOutOfRangeException>(() => _ = AttentionMask.CausalMask with { WindowLeft = w }, "WindowLeft", $"{w}");
    }

    [Test]
    public void WindowOfMinusOneAndZeroAreValid()
    {
        var m = AttentionMask.SlidingWindow(-1, 0);
        Assert.Multiple(() =>
        {
            Assert.That(m.WindowLeft, Is.EqualTo(-1));
            Assert.That(m.WindowRight, Is.Zero);
            Assert.That(m.Causal, Is.False);
            Assert.That(new AttentionMask().WindowLeft, Is.EqualTo(-1), "default is unbounded");
            Assert.That(new AttentionMask().WindowRight, Is.EqualTo(-1), "default is unbounded");
        });
    }

    [TestCase(0)]
    [TestCase(-2)]
    [TestCase(int.MinValue)]
    public void MaxDegreeOfParallelismInvalid(int p) =>
        Rejects<ArgumentOutOfRangeException>(() => _ = new AttentionOptions { MaxDegreeOfParallelism = p }, "MaxDegreeOfParallelism", $"{p}");

    [TestCase(float.NaN)]
    [TestCase(float.PositiveInfinity)]
    [TestCase(float.NegativeInfinity)]
    public void ScaleNotFinite(float s) =>
        Rejects<ArgumentOutOfRangeException>(() => _ = new AttentionOptions { Scale = s }, "Scale", s.ToString(System.Globalization.CultureInfo.InvariantCulture));

    [Test]
    public void NullMask() =>
        Rejects<ArgumentNullException>(() => _ = new AttentionOptions { Mask = null! }, "Mask");

    [Test]
    public void OptionDefaults()
    {
        var o = new AttentionOptions();
        Assert.Multiple(() =>
        {
            Assert.That(o.Scale, Is.Null);
            Assert.That(o.MaxDegreeOfParallelism, Is.EqualTo(-1));
            Assert.That(o.Mask, Is.SameAs(AttentionMask.None));
            Assert.That(o.ResolveScale(64), Is.EqualTo(0.125f));
            Assert.That(o.ResolveScale(80), Is.EqualTo(1f / MathF.Sqrt(80)));
            Assert.That((o with { Scale = 0.5f }).ResolveScale(64), Is.EqualTo(0.5f));
            Assert.That(AttentionOptions.Default.Scale, Is.Null);
        });
    }

    // ---- Softmax ----

    private static void RejectsSoftmax<TEx>(nint[] scoreLengths, nint[] outputLengths, float scale, AttentionMask? mask, int parallelism,
        string paramName, params string[] messageParts) where TEx : ArgumentException
    {
        var output = Num.Filled<float>((int)Math.Max(ForwardCall<float>.Product(outputLengths), 1), ForwardCall<float>.Sentinel);
        Rejects<TEx>(() =>
        {
            var scores = new Rng(1).Normal<float>((int)ForwardCall<float>.Product(scoreLengths));
            CpuAttention.Softmax<float>(ForwardCall<float>.View(scores, scoreLengths), ForwardCall<float>.View(output, outputLengths), scale, mask, parallelism);
        }, paramName, messageParts);
        Assert.That(output, Is.All.EqualTo(ForwardCall<float>.Sentinel), "output must be untouched");
    }

    [Test]
    public void SoftmaxScoresOfWrongRank() =>
        RejectsSoftmax<ArgumentException>([2, 3, 4], [2, 3, 4], 1f, null, -1, "scores", "rank 3");

    [TestCase(0)]
    [TestCase(3)]
    public void SoftmaxZeroSizeDimension(int dim)
    {
        nint[] l = [2, 3, 4, 5];
        l[dim] = 0;
        RejectsSoftmax<ArgumentException>(l, l, 1f, null, -1, "scores", $"dimension {dim}", "size 0");
    }

    [TestCase(float.NaN)]
    [TestCase(float.NegativeInfinity)]
    public void SoftmaxScaleNotFinite(float s) =>
        RejectsSoftmax<ArgumentOutOfRangeException>([2, 3, 4, 5], [2, 3, 4, 5], s, null, -1, "scale", s.ToString(System.Globalization.CultureInfo.InvariantCulture));

    [Test]
    public void SoftmaxOutputOfWrongLengths() =>
        RejectsSoftmax<ArgumentException>([2, 3, 4, 5], [2, 3, 5, 4], 1f, null, -1, "output", "[2, 3, 4, 5]", "[2, 3, 5, 4]");

    [Test]
    public void SoftmaxKeyLengthsDoNotFit() =>
        RejectsSoftmax<ArgumentException>([2, 3, 4, 5], [2, 3, 4, 5], 1f, new AttentionMask { KeyLengths = [5, 6] }, -1, "mask", "KeyLengths[1] = 6", "5");

    [Test]
    public void SoftmaxBlockMaskDoesNotFit() =>
        RejectsSoftmax<ArgumentException>([2, 3, 4, 5], [2, 3, 4, 5], 1f, new AttentionMask { BlockMask = BlockSparseMask.Dense(4, 5, 2, 2, heads: 2) }, -1,
            "mask", "2 heads", "3");

    [TestCase(0)]
    [TestCase(-3)]
    public void SoftmaxParallelismInvalid(int p) =>
        // The argument is named maxDegreeOfParallelism.
        RejectsSoftmax<ArgumentOutOfRangeException>([2, 3, 4, 5], [2, 3, 4, 5], 1f, null, p, "maxDegreeOfParallelism", $"{p}");

    [Test]
    public void SoftmaxUnsupportedElementType()
    {
        var output = new double[2 * 3 * 4 * 5];
        Array.Fill(output, 12345.0);
        Rejects<ArgumentException>(() =>
        {
            var scores = new double[output.Length];
            CpuAttention.Softmax<double>(ForwardCall<double>.View(scores, [2, 3, 4, 5]), ForwardCall<double>.View(output, [2, 3, 4, 5]));
        }, "scores", "Double");
        Assert.That(output, Is.All.EqualTo(12345.0));
    }
}
