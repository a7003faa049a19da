// Shared helpers of the GPU module tests: weights and activations rounded to the element type (so the CPU module, the
// double reference and the GPU see the same numbers), device upload/download, and the naive in-precision module that
// DESIGN.md's fp16/bf16 rule measures against.
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Module;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

internal static class GpuModuleSupport
{
    /// <summary>Random weights (<see cref="ModuleData.RandomWeights"/>) rounded to <typeparamref name="T"/>, as float.</summary>
    public static float[][] Weights<T>(AttentionConfig c, ulong seed) =>
        ModuleData.RandomWeights(c, seed).Select(Round<T>).ToArray();

    /// <summary>A CPU module holding <paramref name="w"/>.</summary>
    public static MultiHeadAttention Cpu(AttentionConfig c, float[][] w)
    {
        var m = new MultiHeadAttention(c);
        m.SetWeights(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]);
        return m;
    }

    /// <summary>A GPU module holding <paramref name="w"/>, compiling through the test run's shared memory-only compiler.</summary>
    public static CudaMultiHeadAttention<T> Gpu<T>(CudaContext context, AttentionConfig c, float[][] w, CudaStream? stream = null) where T : unmanaged
    {
        var m = new CudaMultiHeadAttention<T>(c, context, stream, ForwardTestCompiler.Instance);
        m.SetWeights(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]);
        return m;
    }

    public static float[] Round<T>(float[] a) => Array.ConvertAll(a, Num.Round<T>);

    /// <summary>N(0, 1) activations <c>[B, S, modelDim]</c> rounded to <typeparamref name="T"/>.</summary>
    public static float[] Input<T>(int batch, int seq, int model, ulong seed) => Round<T>(ModuleData.Input(batch, seq, model, seed));

    /// <summary>A contiguous device tensor <c>[B, S, F]</c> holding <paramref name="data"/>.</summary>
    public static DeviceTensor<T> Upload<T>(CudaContext context, float[] data, int batch, int seq, int features) where T : unmanaged
    {
        var t = DeviceTensor<T>.Allocate(context, batch, seq, features);
        t.CopyFrom(Num.FromFloats<T>(data));
        return t;
    }

    /// <summary>A contiguous device tensor <c>[B, S, F]</c> filled with NaN (an element the module forgets to write fails).</summary>
    public static DeviceTensor<T> Poisoned<T>(CudaContext context, int batch, int seq, int features) where T : unmanaged
    {
        var t = DeviceTensor<T>.Allocate(context, batch, seq, features);
        t.CopyFrom(Num.Filled<T>(batch * seq * features, float.NaN));
        return t;
    }

    /// <summary>Waits for <paramref name="stream"/>, then reads a contiguous tensor back as float.</summary>
    public static float[] Download<T>(DeviceTensor<T> t, CudaStream stream) where T : unmanaged
    {
        stream.Synchronize();
        var host = new T[t.ElementCount];
        t.CopyTo(host);
        return Num.ToFloats<T>(host);
    }

    /// <summary>
    /// The module done naively in <typeparamref name="T"/>: projections accumulated in double and rounded to T once
    /// (bias included), attention by <see cref="ReferenceAttention.NaiveForward{T}"/> (scores, probabilities and output
    /// rounded to T), the output projection rounded to T. Inputs and weights are already representable in T.
    /// </summary>
    public static float[] NaiveModule<T>(MultiHeadAttention m, float[] x, int batch, int sq, float[]? context, int sk,
        int[]? keyLengths, int[]? queryLengths)
    {
        var c = m.Config;
        int model = c.ModelDim, qw = c.Heads * c.HeadDim, kw = c.KvHeads * c.HeadDim;
        var kvSource = context ?? x;
        if (context is null) sk = sq;
        float[] q = RoundDoubles<T>(ModuleReference.Linear(x, batch * sq, model, m.QueryWeight.ToArray(), m.QueryBias.ToArray(), qw));
        float[] k = RoundDoubles<T>(ModuleReference.Linear(kvSource, batch * sk, model, m.KeyWeight.ToArray(), m.KeyBias.ToArray(), kw));
        float[] v = RoundDoubles<T>(ModuleReference.Linear(kvSource, batch * sk, model, m.ValueWeight.ToArray(), m.ValueBias.ToArray(), kw));
        var mask = ModuleReference.MaskOf(c, sq, sk, keyLengths, queryLengths);
        float scale = c.Scale ?? 1f / MathF.Sqrt(c.HeadDim);
        float[] o = ReferenceAttention.NaiveForward<T>(q, k, v, new AttentionShape(batch, sq, sk, c.Heads, c.KvHeads, c.HeadDim), scale, mask);
        return RoundDoubles<T>(ModuleReference.Linear(o, batch * sq, qw, m.OutputWeight.ToArray(), m.OutputBias.ToArray(), model));
    }

    /// <summary>
    /// The GPU module's output against the double reference of the module: DESIGN.md's fp32 rule with the module
    /// tolerance for fp32, the 2x-naive rule for fp16/bf16.
    /// </summary>
    public static void AssertModuleOutput<T>(float[] actual, MultiHeadAttention cpu, float[] x, int batch, int sq, float[]? context, int sk,
        int[]? keyLengths, int[]? queryLengths, string what)
    {
        int model = cpu.Config.ModelDim;
        var expected = ModuleReference.Forward(cpu, x, batch, sq, context, sk, keyLengths, queryLengths);
        if (typeof(T) == typeof(float))
        {
            Tolerance.AssertClose(actual, expected.Output, what, [batch, sq, model], ModuleReference.Abs, ModuleReference.Rel);
        }
        else
        {
            float[] naive = NaiveModule<T>(cpu, x, batch, sq, context, sk, keyLengths, queryLengths);
            Tolerance.AssertWithinNaive(actual, expected.Output, naive, what, [batch, sq, model]);
        }
    }

    private static float[] RoundDoubles<T>(double[] a) => Array.ConvertAll(a, e => Num.Round<T>((float)e));
}
