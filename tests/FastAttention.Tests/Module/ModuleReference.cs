// A double-precision reference of the whole multi-head attention module, built from the module's own
// weights (read back through QueryWeight/.../OutputBias): projections and the output projection in
// double, per-head attention through ReferenceAttention with the mask rule re-derived from the config.
// Also the helpers the module tests share: random modules, activation views, sentinel-filled calls.

using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Module;

/// <summary>Reference module results: output <c>[B, Sq, modelDim]</c>, probabilities <c>[B, H, Sq, Sk]</c>.</summary>
internal sealed record ModuleExpected(double[] Output, double[]? Probabilities);

/// <summary>Deliberate errors injected into the reference, to prove the tolerance catches them.</summary>
public sealed record ReferenceMutation
{
    /// <summary>Replaces the mask the reference derives from the config.</summary>
    public Func<AttentionMask, AttentionMask>? Mask { get; init; }
    /// <summary>Swaps the projected queries of heads 0 and 1 before attention.</summary>
    public bool SwapQueryHeads { get; init; }
    /// <summary>Maps query head h to KV head h % Hkv instead of h / (H / Hkv).</summary>
    public bool InterleavedGroups { get; init; }
    /// <summary>Multiplies the scale.</summary>
    public double ScaleFactor { get; init; } = 1;
}

internal static class ModuleReference
{
    /// <summary>
    /// Tolerance of the module against the double reference: <c>|out - ref| &lt;= Abs + Rel·|ref|</c>.
    /// The module is three fp32 GEMMs around fp32 attention. With the test data here (x ~ N(0,1),
    /// weights ~ N(0, 1/fan_in), |ref| ~ 1) each projection's error is bounded by ~u·√K·Σ|terms|
    /// (u = 2^-24, K ≤ 64, Σ|terms| ≲ 10), i.e. ≲ 5e-6 worst case and ~1e-7 typical; softmax and P·V add
    /// a few u·|ref|. This is DESIGN.md's fp32 rule; measured over every forward case the worst error is
    /// 1.1e-6 and the worst error/allowance ratio 0.05 (20x margin), while a mask off by one key, a swapped
    /// head, a wrong GQA grouping or a 1% scale error exceeds the allowance 400x to 10^5 x
    /// (ModuleForwardTests.ToleranceDetects keeps that true).
    /// </summary>
    public const double Abs = 1e-5, Rel = 1e-4;

    /// <summary>The mask the module must apply for a call with <paramref name="sq"/> queries and <paramref name="sk"/> keys.</summary>
    public static AttentionMask MaskOf(AttentionConfig c, int sq, int sk, int[]? keyLengths, int[]? queryLengths) => new()
    {
        Causal = c.Causal,
        WindowLeft = c.WindowLeft,
        WindowRight = c.WindowRight,
        BlockMask = c.BuildBlockMask(sq, sk),
        KeyLengths = keyLengths,
        QueryLengths = queryLengths,
    };

    /// <summary>
    /// q = x·Wqᵀ + bq, k/v = c·Wk/vᵀ + bk/v (c = x for self-attention), attention per head with the
    /// config's mask, scale and GQA mapping, out = attn·Woᵀ + bo; all in double. The projected q/k/v are
    /// handed to <see cref="ReferenceAttention.Forward"/> as float (a relative change of at most 2^-24,
    /// far below the tolerance).
    /// </summary>
    public static ModuleExpected Forward(MultiHeadAttention m, float[] x, int batch, int sq, float[]? context, int sk,
        int[]? keyLengths = null, int[]? queryLengths = null, bool probabilities = false, ReferenceMutation? mutation = null)
    {
        var c = m.Config;
        int model = c.ModelDim, h = c.Heads, hkv = c.KvHeads, d = c.HeadDim;
        int qw = h * d, kw = hkv * d;
        var kvSource = context ?? x;
        if (context is null) sk = sq;
        var q = ToFloat(Linear(x, batch * sq, model, m.QueryWeight.ToArray(), m.QueryBias.ToArray(), qw));
        var k = ToFloat(Linear(kvSource, batch * sk, model, m.KeyWeight.ToArray(), m.KeyBias.ToArray(), kw));
        var v = ToFloat(Linear(kvSource, batch * sk, model, m.ValueWeight.ToArray(), m.ValueBias.ToArray(), kw));
        mutation ??= new ReferenceMutation();
        if (mutation.SwapQueryHeads)
        {
            for (int row = 0; row < batch * sq; row++)
            {
                for (int i = 0; i < d; i++)
                {
                    (q[row * qw + i], q[row * qw + d + i]) = (q[row * qw + d + i], q[row * qw + i]);
                }
            }
        }
        if (mutation.InterleavedGroups)
        {
            // Expand K/V to H heads with kv head h % Hkv, then run as MHA.
            k = ExpandInterleaved(k, batch * sk, h, hkv, d);
            v = ExpandInterleaved(v, batch * sk, h, hkv, d);
            hkv = h;
        }
        var mask = MaskOf(c, sq, sk, keyLengths, queryLengths);
        if (mutation.Mask is { } f) mask = f(mask);
        double scale = (c.Scale is { } s ? s : 1.0 / Math.Sqrt(d)) * mutation.ScaleFactor;
        var attention = ReferenceAttention.Forward(q, k, v, new AttentionShape(batch, sq, sk, h, hkv, d), scale, mask, probabilities);
        var output = Linear(attention.Output, batch * sq, qw, m.OutputWeight.ToArray(), m.OutputBias.ToArray(), model);
        return new ModuleExpected(output, attention.Probabilities);
    }

    /// <summary><c>[rows, outF] = x·wᵀ + b</c> in double; <paramref name="b"/> empty = no bias.</summary>
    public static double[] Linear(float[] x, int rows, int inF, float[] w, float[] b, int outF) =>
        Linear(Array.ConvertAll(x, e => (double)e), rows, inF, w, b, outF);

    public static double[] Linear(double[] x, int rows, int inF, float[] w, float[] b, int outF)
    {
        Assert.That(w, Has.Length.EqualTo(outF * inF), "reference: weight length");
        Assert.That(b.Length, Is.EqualTo(0).Or.EqualTo(outF), "reference: bias length");
        var y = new double[rows * outF];
        for (int r = 0; r < rows; r++)
        {
            for (int o = 0; o < outF; o++)
            {
                double sum = b.Length == 0 ? 0 : b[o];
                for (int i = 0; i < inF; i++) sum += x[r * inF + i] * w[o * inF + i];
                y[r * outF + o] = sum;
            }
        }
        return y;
    }

    private static float[] ToFloat(double[] a) => Array.ConvertAll(a, e => (float)e);

    private static float[] ExpandInterleaved(float[] kv, int rows, int h, int hkv, int d)
    {
        var r = new float[rows * h * d];
        for (int row = 0; row < rows; row++)
            for (int head = 0; head < h; head++)
                Array.Copy(kv, (row * hkv + head % hkv) * d, r, (row * h + head) * d, d);
        return r;
    }
}

/// <summary>Random modules, activations and sentinel-filled calls shared by the module tests.</summary>
internal static class ModuleData
{
    public const float Sentinel = 12345f;

    /// <summary>
    /// A module with random weights: W ~ N(0, 1/fan_in) so q, k, v, out are O(1) and the softmax is neither
    /// flat nor saturated; biases ~ N(0, 0.5²) (zero-length when the config has none).
    /// </summary>
    public static MultiHeadAttention Create(AttentionConfig c, ulong seed, int maxDegreeOfParallelism = -1)
    {
        var m = new MultiHeadAttention(c, maxDegreeOfParallelism: maxDegreeOfParallelism);
        var w = RandomWeights(c, seed);
        m.SetWeights(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]);
        return m;
    }

    /// <summary>Wq, Wk, Wv, Wo, bq, bk, bv, bo (biases empty without <see cref="AttentionConfig.Bias"/>).</summary>
    public static float[][] RandomWeights(AttentionConfig c, ulong seed)
    {
        var rng = new Rng(seed);
        int model = c.ModelDim, qw = c.Heads * c.HeadDim, kw = c.KvHeads * c.HeadDim;
        double si = 1 / Math.Sqrt(model), so = 1 / Math.Sqrt(qw);
        return
        [
            rng.Normal<float>(qw * model, si), rng.Normal<float>(kw * model, si), rng.Normal<float>(kw * model, si), rng.Normal<float>(model * qw, so),
            c.Bias ? rng.Normal<float>(qw, 0.5) : [], c.Bias ? rng.Normal<float>(kw, 0.5) : [],
            c.Bias ? rng.Normal<float>(kw, 0.5) : [], c.Bias ? rng.Normal<float>(model, 0.5) : [],
        ];
    }

    /// <summary>All eight weight arrays of a module, copied (for "nothing changed" checks).</summary>
    public static float[][] Snapshot(MultiHeadAttention m) =>
    [
        m.QueryWeight.ToArray(), m.KeyWeight.ToArray(), m.ValueWeight.ToArray(), m.OutputWeight.ToArray(),
        m.QueryBias.ToArray(), m.KeyBias.ToArray(), m.ValueBias.ToArray(), m.OutputBias.ToArray(),
    ];

    public static readonly string[] WeightNames = ["query", "key", "value", "output", "queryBias", "keyBias", "valueBias", "outputBias"];

    public static void AssertBitwise(float[][] actual, float[][] expected, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        for (int i = 0; i < actual.Length; i++)
        {
            Assert.That(actual[i], Has.Length.EqualTo(expected[i].Length), $"{what}: {WeightNames[i]} length");
            for (int j = 0; j < actual[i].Length; j++)
            {
                if (BitConverter.SingleToInt32Bits(actual[i][j]) != BitConverter.SingleToInt32Bits(expected[i][j]))
                {
                    Assert.Fail($"{what}: {WeightNames[i]}[{j}] = {actual[i][j]:R} (0x{BitConverter.SingleToInt32Bits(actual[i][j]):X8}), " +
                        $"expected {expected[i][j]:R} (0x{BitConverter.SingleToInt32Bits(expected[i][j]):X8}).");
                }
            }
        }
    }

    /// <summary>Two fp32 results of the same computation by different paths: the module tolerance, <paramref name="expected"/> as the reference.</summary>
    public static void AssertSame(float[] actual, float[] expected, string what, int[] dims) =>
        Tolerance.AssertClose(actual, Array.ConvertAll(expected, v => (double)v), what, dims, ModuleReference.Abs, ModuleReference.Rel);

    /// <summary>Contiguous <c>[B, S, modelDim]</c>.</summary>
    public static TensorSpan<float> Act(float[] data, int batch, int seq, int model) =>
        Views.Strided(data, [batch, seq, model], [(nint)seq * model, model, 1]);

    /// <summary>N(0, 1) activations <c>[B, S, modelDim]</c>.</summary>
    public static float[] Input(int batch, int seq, int model, ulong seed) => new Rng(seed).Normal<float>(batch * seq * model);

    /// <summary>Every element equals <paramref name="value"/> bit for bit; on failure names the count and the first one that differs.</summary>
    public static void AssertAll(float[] a, float value, string what)
    {
        int bad = 0, first = -1;
        for (int i = 0; i < a.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(value))
            {
                bad++;
                if (first < 0) first = i;
            }
        }
        if (bad > 0) Assert.Fail($"{what}: {bad} of {a.Length} elements differ from {value:R}; the first is [{first}] = {a[first]:R}.");
    }

    public static float[] Filled(int n, float value)
    {
        var r = new float[n];
        Array.Fill(r, value);
        return r;
    }

    /// <summary>
    /// Runs the full forward with NaN-filled destinations (an element the module forgets to write fails).
    /// <paramref name="context"/> null = self-attention.
    /// </summary>
    public static (float[] Output, float[]? Probabilities) Run(MultiHeadAttention m, float[] x, int batch, int sq, float[]? context, int sk,
        int[]? keyLengths = null, int[]? queryLengths = null, bool probabilities = false)
    {
        var c = m.Config;
        if (context is null) sk = sq;
        var y = Filled(batch * sq * c.ModelDim, float.NaN);
        var p = probabilities ? Filled(batch * c.Heads * sq * sk, float.NaN) : null;
        m.Forward(Act(x, batch, sq, c.ModelDim), Act(y, batch, sq, c.ModelDim),
            context is null ? default : Act(context, batch, sk, c.ModelDim),
            keyLengths, queryLengths,
            p is null ? default : Views.Bhqk(p, batch, c.Heads, sq, sk));
        return (y, p);
    }
}
