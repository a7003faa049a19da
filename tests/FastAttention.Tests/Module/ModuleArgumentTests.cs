// MultiHeadAttention.Forward argument checks: wrong ranks and lengths of input, context, output,
// probabilities and padding lengths are rejected with an ArgumentException naming the argument (and the
// numbers) before anything is written; the constructor's checks; a custom backend is the one used.

using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Module;

/// <summary>
/// One bad full-forward call on a module with modelDim 32, H 4, Hkv 2, D 8. Lengths null = the right
/// ones for B 2, Sq 17 (and Sk 9 with a context). <see cref="Contains"/>: text the message must include.
/// </summary>
public sealed record BadForward(string Name, string Param, string? Contains = null)
{
    public nint[] Input { get; init; } = [2, 17, 32];
    public nint[]? Context { get; init; }
    public nint[]? Output { get; init; }
    public nint[]? OutputStrides { get; init; }
    public nint[]? Probabilities { get; init; }
    public int[]? KeyLengths { get; init; }
    public int[]? QueryLengths { get; init; }

    public override string ToString() => Name;
}

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class ModuleArgumentTests
{
    private static readonly BadForward[] BadCalls =
    [
        new("input rank 2", "input", "[34, 32]") { Input = [34, 32] },
        new("input rank 4", "input", "[2, 17, 4, 8]") { Input = [2, 17, 4, 8] },
        new("input rank 1", "input") { Input = [32] },
        new("input modelDim 31", "input", "31") { Input = [2, 17, 31] },
        new("input Sq 0", "input") { Input = [2, 0, 32] },
        new("input batch 0", "input") { Input = [0, 17, 32] },
        new("context rank 2", "context") { Context = [9, 32] },
        new("context modelDim 33", "context", "33") { Context = [2, 9, 33] },
        new("context batch 3 vs input 2", "context", "3") { Context = [3, 9, 32] },
        new("context Sk 0", "context") { Context = [2, 0, 32] },
        new("output modelDim 33", "output", "33") { Output = [2, 17, 33] },
        new("output Sq 16", "output", "16") { Output = [2, 16, 32] },
        new("output batch 1", "output") { Output = [1, 17, 32] },
        new("output rank 2", "output") { Output = [34, 32] },
        new("output rank 4", "output") { Output = [2, 17, 4, 8] },
        new("output of Sk rows in cross", "output") { Context = [2, 9, 32], Output = [2, 9, 32] },
        new("output stride 0 over rows", "output") { Output = [2, 17, 32], OutputStrides = [17 * 32, 0, 1] },
        new("probabilities Sk 16", "probabilities", "16") { Probabilities = [2, 4, 17, 16] },
        new("probabilities Hkv heads", "probabilities") { Probabilities = [2, 2, 17, 17] },
        new("probabilities rank 3", "probabilities") { Probabilities = [2, 4, 17] },
        new("probabilities [B,H,Sq,Sq] in cross", "probabilities") { Context = [2, 9, 32], Probabilities = [2, 4, 17, 17] },
        new("probabilities batch 1", "probabilities") { Probabilities = [1, 4, 17, 17] },
        new("keyLengths 3 entries", "keyLengths", "3") { KeyLengths = [1, 2, 3] },
        new("keyLengths above Sk", "keyLengths", "18") { KeyLengths = [18, 3] },
        new("keyLengths negative", "keyLengths", "-1") { KeyLengths = [5, -1] },
        new("keyLengths above Sk in cross (Sk 9 < Sq 17)", "keyLengths", "10") { Context = [2, 9, 32], KeyLengths = [10, 1] },
        new("queryLengths 1 entry", "queryLengths") { QueryLengths = [3] },
        new("queryLengths above Sq", "queryLengths", "18") { QueryLengths = [1, 18] },
        new("queryLengths above Sq in cross (Sq 17 < Sk 30)", "queryLengths", "18") { Context = [2, 30, 32], QueryLengths = [18, 1] },
        new("queryLengths bad, keyLengths fine", "queryLengths", "18") { KeyLengths = [3, 17], QueryLengths = [18, 1] },
    ];

    /// <summary>A contiguous view; a zero-length dimension gets all-zero strides (what the Tensors library accepts).</summary>
    private static TensorSpan<float> View(float[] data, nint[] lengths, nint[]? strides = null)
    {
        if (strides is null)
        {
            strides = new nint[lengths.Length];
            nint s = 1;
            for (int i = lengths.Length - 1; i >= 0; i--)
            {
                strides[i] = s;
                s *= lengths[i];
            }
            if (lengths.Contains(0)) Array.Clear(strides);
        }
        return Views.Strided(data, lengths, strides);
    }

    private static int Count(nint[] lengths) => (int)Math.Max(1, lengths.Aggregate(1L, (a, n) => a * n));

    [TestCaseSource(nameof(BadCalls))]
    public void BadShapeThrowsNamingTheArgumentAndWritesNothing(BadForward t)
    {
        var m = ModuleData.Create(new AttentionConfig(32, 4, 2), 61);
        var outLengths = t.Output ?? [2, 17, 32];
        var x = new Rng(62).Normal<float>(Count(t.Input));
        var ctx = t.Context is null ? null : new Rng(63).Normal<float>(Count(t.Context));
        var y = ModuleData.Filled(Count(outLengths), ModuleData.Sentinel);
        var p = t.Probabilities is null ? null : ModuleData.Filled(Count(t.Probabilities), ModuleData.Sentinel);
        // The views are built before the call, so an exception can only come from Forward.
        Assert.DoesNotThrow(() =>
        {
            _ = View(x, t.Input);
            _ = View(y, outLengths, t.OutputStrides);
            if (ctx is not null) _ = View(ctx, t.Context!);
            if (p is not null) _ = View(p, t.Probabilities!);
        }, "building the views");

        var ex = Assert.Catch<ArgumentException>(() => m.Forward(View(x, t.Input), View(y, outLengths, t.OutputStrides),
            ctx is null ? default : View(ctx, t.Context!), t.KeyLengths, t.QueryLengths, p is null ? default : View(p, t.Probabilities!)))!;
        Assert.That(ex.ParamName, Is.EqualTo(t.Param), ex.Message);
        if (t.Contains is not null) Assert.That(ex.Message, Does.Contain(t.Contains));
        ModuleData.AssertAll(y, ModuleData.Sentinel, "output must be untouched");
        if (p is not null) ModuleData.AssertAll(p, ModuleData.Sentinel, "probabilities must be untouched");
    }

    [Test]
    public void LengthArraysAreNotModified()
    {
        var m = ModuleData.Create(new AttentionConfig(32, 4, 2, causal: true), 64);
        int[] kl = [5, 17], ql = [17, 2];
        ModuleData.Run(m, ModuleData.Input(2, 17, 32, 65), 2, 17, null, 17, kl, ql, probabilities: true);
        Assert.That(kl, Is.EqualTo(new[] { 5, 17 }));
        Assert.That(ql, Is.EqualTo(new[] { 17, 2 }));
    }

    /// <summary>
    /// Output views the output projection cannot write in place (rows that do not collapse to one stride,
    /// or stride 2 on the features): supported (then right, and nothing outside the view written) or
    /// rejected naming "output" before anything is written, probabilities included.
    /// </summary>
    [TestCase("rows of [2, 20, M]")]
    [TestCase("features stride 2")]
    public void UnsupportedOutputViewsEitherWorkOrWriteNothing(string layout)
    {
        var m = ModuleData.Create(new AttentionConfig(32, 4, 2), 66);
        int model = 32, sq = 17;
        var x = ModuleData.Input(2, sq, model, 67);
        var (expected, expectedP) = ModuleData.Run(m, x, 2, sq, null, sq, probabilities: true);
        float[] yBig;
        TensorSpan<float> output;
        Func<int, int, int, int> at;
        if (layout.StartsWith("rows"))
        {
            yBig = ModuleData.Filled(2 * 20 * model, ModuleData.Sentinel);
            output = Views.Strided(yBig, [2, sq, model], [20 * model, model, 1]);
            at = (b, i, f) => (b * 20 + i) * model + f;
        }
        else
        {
            yBig = ModuleData.Filled(2 * sq * 2 * model, ModuleData.Sentinel);
            output = Views.Strided(yBig, [2, sq, model], [sq * 2 * model, 2 * model, 2]);
            at = (b, i, f) => (b * sq + i) * 2 * model + 2 * f;
        }
        var p = ModuleData.Filled(2 * 4 * sq * sq, ModuleData.Sentinel);
        try
        {
            m.Forward(ModuleData.Act(x, 2, sq, model), output, default, null, null, Views.Bhqk(p, 2, 4, sq, sq));
        }
        catch (ArgumentException ex)
        {
            Assert.That(ex.ParamName, Is.EqualTo("output"), ex.Message);
            ModuleData.AssertAll(yBig, ModuleData.Sentinel, "a rejected call must not write the output");
            ModuleData.AssertAll(p, ModuleData.Sentinel, "a rejected call must not write the probabilities");
            return;
        }
        var got = new float[expected.Length];
        var touched = new bool[yBig.Length];
        for (int b = 0; b < 2; b++)
            for (int i = 0; i < sq; i++)
                for (int f = 0; f < model; f++)
                {
                    got[(b * sq + i) * model + f] = yBig[at(b, i, f)];
                    touched[at(b, i, f)] = true;
                }
        ModuleData.AssertSame(got, expected, "output through the view", [2, sq, model]);
        ModuleData.AssertSame(p, expectedP!, "probabilities", [2, 4, sq, sq]);
        for (int i = 0; i < yBig.Length; i++)
        {
            if (!touched[i]) Assert.That(yBig[i], Is.EqualTo(ModuleData.Sentinel), $"element {i} outside the output view");
        }
    }

    /// <summary>
    /// Input or context given as [2, S, M] rows of a [2, 30, M] buffer (batch stride 30M, so the rows do not
    /// collapse to one stride): supported (then right) or rejected naming the argument with nothing written.
    /// </summary>
    [TestCase("input")]
    [TestCase("context")]
    public void UnsupportedInputViewsEitherWorkOrWriteNothing(string which)
    {
        var m = ModuleData.Create(new AttentionConfig(32, 4, 2, causal: true), 76);
        int model = 32, sq = 17, sk = 9;
        var x = ModuleData.Input(2, sq, model, 77);
        var ctx = ModuleData.Input(2, sk, model, 78);
        var (expected, expectedP) = ModuleData.Run(m, x, 2, sq, ctx, sk, probabilities: true);
        var big = ModuleData.Filled(2 * 30 * model, float.NaN);
        var src = which == "input" ? x : ctx;
        int s = which == "input" ? sq : sk;
        for (int b = 0; b < 2; b++) Array.Copy(src, b * s * model, big, (b * 30 + 2) * model, s * model);
        var y = ModuleData.Filled(expected.Length, ModuleData.Sentinel);
        var p = ModuleData.Filled(expectedP!.Length, ModuleData.Sentinel);
        try
        {
            var view = TensorLayouts.View(big.AsSpan(2 * model), [2, s, model], [30 * model, model, 1]);
            m.Forward(which == "input" ? view : ModuleData.Act(x, 2, sq, model), ModuleData.Act(y, 2, sq, model),
                which == "context" ? view : ModuleData.Act(ctx, 2, sk, model), null, null, Views.Bhqk(p, 2, 4, sq, sk));
        }
        catch (ArgumentException ex)
        {
            Assert.That(ex.ParamName, Is.EqualTo(which), ex.Message);
            ModuleData.AssertAll(y, ModuleData.Sentinel, "a rejected call must not write the output");
            ModuleData.AssertAll(p, ModuleData.Sentinel, "a rejected call must not write the probabilities");
            return;
        }
        ModuleData.AssertSame(y, expected, "output", [2, sq, model]);
        ModuleData.AssertSame(p, expectedP, "probabilities", [2, 4, sq, sk]);
    }

    [Test]
    public void RowSlicedInputAndContextViewsAreRead()
    {
        // Batch 1: input = rows [3, 20) of a [1, 30, M] buffer, context = rows [5, 14) of another.
        var m = ModuleData.Create(new AttentionConfig(32, 4, 1, causal: true), 68);
        int model = 32;
        var xBig = ModuleData.Input(1, 30, model, 69);
        var cBig = ModuleData.Input(1, 30, model, 70);
        var x = xBig.AsSpan(3 * model, 17 * model).ToArray();
        var ctx = cBig.AsSpan(5 * model, 9 * model).ToArray();
        var (expected, _) = ModuleData.Run(m, x, 1, 17, ctx, 9);
        var y = ModuleData.Filled(17 * model, float.NaN);
        m.Forward(TensorLayouts.View(xBig.AsSpan(3 * model), [1, 17, model], [30 * model, model, 1]), ModuleData.Act(y, 1, 17, model),
            TensorLayouts.View(cBig.AsSpan(5 * model), [1, 9, model], [30 * model, model, 1]));
        ModuleData.AssertSame(y, expected, "row-sliced views vs contiguous copies", [1, 17, model]);
    }

    [Test]
    public void ConstructorChecks()
    {
        var ex = Assert.Throws<ArgumentNullException>(() => new MultiHeadAttention(null!))!;
        Assert.That(ex.ParamName, Is.EqualTo("config"));
        var config = new AttentionConfig(16, 2);
        foreach (int bad in new[] { 0, -2, int.MinValue })
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => new MultiHeadAttention(config, maxDegreeOfParallelism: bad))!;
            Assert.That(e.ParamName, Is.EqualTo("maxDegreeOfParallelism"));
            Assert.That(e.ActualValue, Is.EqualTo(bad));
        }
        var fresh = new MultiHeadAttention(config);
        Assert.That(fresh.Config, Is.SameAs(config));
        foreach (var w in ModuleData.Snapshot(fresh)) Assert.That(w, Is.All.EqualTo(0f), "a new module has zero weights");
        Assert.That(fresh.QueryWeight.Length, Is.EqualTo(16 * 16));
        Assert.That(fresh.OutputBias.Length, Is.EqualTo(16));
    }

    [Test]
    public void SingleThreadedModuleMatchesTheReference()
    {
        var c = new AttentionConfig(24, 4, 2, causal: true, windowLeft: 4);
        var m = ModuleData.Create(c, 71, maxDegreeOfParallelism: 1);
        var x = ModuleData.Input(2, 33, 24, 72);
        var (y, p) = ModuleData.Run(m, x, 2, 33, null, 33, probabilities: true);
        var e = ModuleReference.Forward(m, x, 2, 33, null, 33, probabilities: true);
        Tolerance.AssertClose(y, e.Output, "single-threaded output", [2, 33, 24], ModuleReference.Abs, ModuleReference.Rel);
        Tolerance.AssertClose(p!, e.Probabilities!, "single-threaded probabilities", [2, 4, 33, 33], ModuleReference.Abs, ModuleReference.Rel);
    }

    private sealed class RecordingBackend : IAttentionBackend
    {
        private readonly CpuBackend _cpu = new();
        public List<string> Calls { get; } = [];
        public string Name => "recording";

        public void Linear(ReadOnlyTensorSpan<float> input, ReadOnlySpan<float> weight, ReadOnlySpan<float> bias, TensorSpan<float> output)
        {
            Calls.Add($"linear {input.Lengths[^1]}->{output.Lengths[^1]}");
            _cpu.Linear(input, weight, bias, output);
        }

        public void Attention(ReadOnlyTensorSpan<float> query, ReadOnlyTensorSpan<float> key, ReadOnlyTensorSpan<float> value,
            TensorSpan<float> output, AttentionOptions options, TensorSpan<float> probabilities)
        {
            Calls.Add($"attention H{query.Lengths[2]}/{key.Lengths[2]} D{query.Lengths[3]}");
            _cpu.Attention(query, key, value, output, options, probabilities);
        }
    }

    [Test]
    public void FullForwardRunsOnTheGivenBackend()
    {
        // Self-attention: one fused QKV projection (32 -> 4·8 + 2·2·8 = 64), attention, output projection.
        // Cross-attention: Q (32 -> 32), fused KV (32 -> 32), attention, output projection.
        var c = new AttentionConfig(32, 4, 2);
        var backend = new RecordingBackend();
        var m = new MultiHeadAttention(c, backend);
        var w = ModuleData.RandomWeights(c, 73);
        m.SetWeights(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]);
        var x = ModuleData.Input(2, 5, 32, 74);
        var (y, _) = ModuleData.Run(m, x, 2, 5, null, 5);
        Assert.That(backend.Calls, Is.EqualTo(new[] { "linear 32->64", "attention H4/2 D8", "linear 32->32" }));
        Tolerance.AssertClose(y, ModuleReference.Forward(m, x, 2, 5, null, 5).Output, "self via backend", [2, 5, 32], ModuleReference.Abs, ModuleReference.Rel);
        backend.Calls.Clear();
        var ctx = ModuleData.Input(2, 3, 32, 75);
        (y, _) = ModuleData.Run(m, x, 2, 5, ctx, 3);
        Assert.That(backend.Calls, Is.EqualTo(new[] { "linear 32->32", "linear 32->32", "attention H4/2 D8", "linear 32->32" }));
        Tolerance.AssertClose(y, ModuleReference.Forward(m, x, 2, 5, ctx, 3).Output, "cross via backend", [2, 5, 32], ModuleReference.Abs, ModuleReference.Rel);
    }
}
