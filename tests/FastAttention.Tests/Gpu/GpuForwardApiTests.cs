// CudaAttention on a GPU beyond the parity sweep: bad input throws before anything is queued and leaves the output
// untouched; strided views ([B, H, S, D] memory, a head-dim stride of 2, padded LSE) give the contiguous results;
// the device tables follow changing lengths across calls and streams; logits near 1e4 stay finite. Ignored, with the
// reason, where no CUDA device exists.
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Cuda;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

[TestFixture]
public sealed class GpuForwardApiTests : GpuFixture
{
    private CudaAttention _attention = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        _attention = new CudaAttention(Context, ForwardTestCompiler.Instance);
    }

    [OneTimeTearDown]
    public void TearDown()
    {
        _attention?.Dispose();
    }

    [SetUp]
    public void TunedByDefault() => _attention.Variant = CudaKernelVariant.Tuned;

    [Test]
    public void BadInputThrowsBeforeLaunchingAndLeavesTheOutputUntouched()
    {
        using var fresh = new CudaAttention(Context, ForwardTestCompiler.Instance);
        using var q = DeviceTensor<Half>.AllocateBshd(Context, 2, 16, 4, 48);
        using var k = DeviceTensor<Half>.AllocateBshd(Context, 2, 16, 2, 48);
        using var o48 = Filled(2, 16, 4, 48, 7f);
        Assert.That(() => fresh.Forward(q, k, k, o48), Throws.ArgumentException.With.Property("ParamName").EqualTo("query"), "head dim 48");

        using var q64 = DeviceTensor<Half>.AllocateBshd(Context, 2, 16, 4, 64);
        using var k64 = DeviceTensor<Half>.AllocateBshd(Context, 2, 16, 2, 64);
        using var o64 = Filled(2, 16, 4, 64, 7f);
        using var wrongOut = Filled(2, 16, 4, 32, 7f);
        Assert.That(() => fresh.Forward(q64, k64, k64, wrongOut), Throws.ArgumentException.With.Property("ParamName").EqualTo("output"));
        var badLengths = new AttentionOptions { Mask = new AttentionMask { KeyLengths = [1, 2, 3] } };
        Assert.That(() => fresh.Forward(q64, k64, k64, o64, badLengths), Throws.ArgumentException.With.Property("ParamName").EqualTo("options"));
        var badBlocks = new AttentionOptions { Mask = new AttentionMask { BlockMask = BlockSparseMask.Dense(16, 32, 4, 4) } };
        Assert.That(() => fresh.Forward(q64, k64, k64, o64, badBlocks), Throws.ArgumentException.With.Property("ParamName").EqualTo("options"));
        using var badLse = DeviceTensor<float>.Allocate(Context, 2, 16, 4);
        Assert.That(() => fresh.Forward(q64, k64, k64, o64, null, badLse), Throws.ArgumentException.With.Property("ParamName").EqualTo("logSumExp"));
        using var k3 = DeviceTensor<Half>.AllocateBshd(Context, 2, 16, 3, 64);
        Assert.That(() => fresh.Forward(q64, k3, k3, o64), Throws.ArgumentException.With.Property("ParamName").EqualTo("key"), "H % Hkv");

        Context.Synchronize();
        Assert.That(fresh.LastKernelName, Is.Null, "nothing was launched");
        foreach (var o in new[] { o48, o64, wrongOut })
        {
            var back = new Half[o.ElementCount];
            o.CopyTo(back);
            Assert.That(back.All(x => (float)x == 7f), Is.True, "output untouched");
        }
    }

    [Test]
    public void Fp32RunsTheSimtKernelEvenWhenTunedIsSelected()
    {
        var shape = new AttentionShape(1, 33, 47, 2, 1, 80);
        var inputs = AttentionInputs<float>.Random(shape, 7);
        var gpu = Run(inputs, AttentionOptions.Default);
        Assert.That(_attention.LastKernelName, Is.EqualTo("fa_fwd_simt_f32"));
        inputs.AssertMatchesReference(gpu, AttentionOptions.Default, "fp32");
    }

    [TestCase(CudaKernelVariant.Tuned)]
    [TestCase(CudaKernelVariant.Plain)]
    public void BhsdViewsGiveTheContiguousResultBitForBit(CudaKernelVariant variant)
    {
        _attention.Variant = variant;
        const int B = 2, Sq = 70, Sk = 90, H = 4, Hkv = 2, D = 64;
        var shape = new AttentionShape(B, Sq, Sk, H, Hkv, D);
        var inputs = AttentionInputs<Half>.Random(shape, 11);
        var options = new AttentionOptions { Mask = AttentionMask.CausalMask };
        var contiguous = Run(inputs, options);

        using var qb = DeviceBuffer<Half>.FromSpan(Context, Views.BshdToBhsd(inputs.Q, B, Sq, H, D));
        using var kb = DeviceBuffer<Half>.FromSpan(Context, Views.BshdToBhsd(inputs.K, B, Sk, Hkv, D));
        using var vb = DeviceBuffer<Half>.FromSpan(Context, Views.BshdToBhsd(inputs.V, B, Sk, Hkv, D));
        using var ob = DeviceBuffer<Half>.Allocate(Context, (long)B * Sq * H * D);
        using var q = DeviceTensor<Half>.WrapBhsdAsBshd(Context, qb.DevicePointer, B, Sq, H, D);
        using var k = DeviceTensor<Half>.WrapBhsdAsBshd(Context, kb.DevicePointer, B, Sk, Hkv, D);
        using var v = DeviceTensor<Half>.WrapBhsdAsBshd(Context, vb.DevicePointer, B, Sk, Hkv, D);
        using var o = DeviceTensor<Half>.WrapBhsdAsBshd(Context, ob.DevicePointer, B, Sq, H, D);
        // LSE with padded strides: [B, H, Sq] inside a [B, H, Sq + 5] buffer.
        using var lseBuffer = DeviceBuffer<float>.Allocate(Context, (long)B * H * (Sq + 5));
        using var lse = DeviceTensor<float>.Wrap(Context, lseBuffer.DevicePointer, [B, H, Sq], [(nint)H * (Sq + 5), Sq + 5, 1]);
        _attention.Forward(q, k, v, o, options, lse);
        Context.Synchronize();
        Assert.That(_attention.LastKernelName, variant == CudaKernelVariant.Tuned ? Does.StartWith("fa_fwd_hd64_f16") : Is.EqualTo("fa_fwd_simt_f16"));
        var outBhsd = ob.ToArray();
        var outBshd = Views.BhsdToBshd(outBhsd, B, Sq, H, D);
        Tolerance.AssertBitwiseEqual(Num.ToFloats<Half>(outBshd), contiguous.Output, "BHSD output", inputs.OutputDims);
        var lsePadded = lseBuffer.ToArray();
        var lseDense = new float[B * H * Sq];
        for (int bh = 0; bh < B * H; bh++) Array.Copy(lsePadded, bh * (Sq + 5), lseDense, bh * Sq, Sq);
        Tolerance.AssertBitwiseEqual(lseDense, contiguous.LogSumExp!, "padded LSE", inputs.LseDims);
    }

    [Test]
    public void AHeadDimStrideOf2FallsBackToTheSimtKernel()
    {
        const int B = 1, Sq = 37, Sk = 41, H = 2, D = 32;
        var shape = new AttentionShape(B, Sq, Sk, H, H, D);
        var inputs = AttentionInputs<BFloat16>.Random(shape, 12);
        var options = new AttentionOptions { Mask = AttentionMask.SlidingWindow(6, 2) };
        _attention.Variant = CudaKernelVariant.Plain;
        var plain = Run(inputs, options);
        _attention.Variant = CudaKernelVariant.Tuned;

        // Every tensor interleaved with a filler element: head-dim stride 2.
        DeviceTensor<BFloat16> Interleaved(BFloat16[] data, int s, out DeviceBuffer<BFloat16> buffer)
        {
            var wide = new BFloat16[data.Length * 2];
            for (int i = 0; i < data.Length; i++) wide[2 * i] = data[i];
            buffer = DeviceBuffer<BFloat16>.FromSpan(Context, wide);
            return DeviceTensor<BFloat16>.Wrap(Context, buffer.DevicePointer, [B, s, H, D], [(nint)2 * s * H * D, 2 * H * D, 2 * D, 2]);
        }
        using var q = Interleaved(inputs.Q, Sq, out var qb);
        using var k = Interleaved(inputs.K, Sk, out var kb);
        using var v = Interleaved(inputs.V, Sk, out var vb);
        using var o = Interleaved(new BFloat16[B * Sq * H * D], Sq, out var ob);
        _attention.Forward(q, k, v, o, options);
        Context.Synchronize();
        Assert.That(_attention.LastKernelName, Is.EqualTo("fa_fwd_simt_bf16"));
        var wide = ob.ToArray();
        var result = new float[B * Sq * H * D];
        for (int i = 0; i < result.Length; i++) result[i] = wide[2 * i];
        Tolerance.AssertBitwiseEqual(result, plain.Output, "stride-2 output", inputs.OutputDims);
        qb.Dispose();
        kb.Dispose();
        vb.Dispose();
        ob.Dispose();
    }

    [Test]
    public void TablesFollowChangingLengthsAcrossCallsAndStreams()
    {
        var shape = new AttentionShape(3, 45, 80, 2, 1, 128);
        var inputs = AttentionInputs<Half>.Random(shape, 13);
        using var stream = CudaStream.Create(Context);
        AttentionOptions Lengths(int[] keys, int[] queries) => new() { Mask = new AttentionMask { KeyLengths = keys, QueryLengths = queries, Causal = true } };
        var a = Lengths([80, 3, 41], [45, 45, 1]);
        var b = Lengths([1, 80, 0], [20, 45, 45]);
        foreach (var (options, s) in new[] { (a, (CudaStream?)null), (b, null), (a, stream), (a, null), (b, stream) })
        {
            var gpu = Run(inputs, options, s);
            inputs.AssertMatchesReference(gpu, options, $"lengths {string.Join(",", options.Mask.KeyLengths!)} on {(s is null ? "default" : "own")} stream");
        }
    }

    [TestCase("f16")]
    [TestCase("bf16")]
    public void LogitsNear1e4StayFinite(string dtype)
    {
        var shape = new AttentionShape(1, 65, 77, 2, 2, 64);
        var options = new AttentionOptions { Scale = 100f, Mask = AttentionMask.CausalMask };  // |logits| of 1e4 to 4e4
        if (dtype == "f16") Check<Half>();
        else Check<BFloat16>();

        void Check<T>() where T : unmanaged
        {
            var inputs = AttentionInputs<T>.Random(shape, 14, sigma: 3.5);
            var gpu = Run(inputs, options);
            Tolerance.AssertNoNaN(gpu.Output, "output", inputs.OutputDims);
            inputs.AssertMatchesReference(gpu, options, $"large logits {dtype}");
        }
    }

    /// <summary>
    /// Small shapes over every kernel kind (tuned dense, causal, sparse with partial tiles; SIMT), with padding and
    /// GQA: the subset to run under compute-sanitizer memcheck and racecheck (native/kernels/README.md has the commands).
    /// </summary>
    [Test]
    [Category("Sanitizer")]
    public void SanitizerSubset()
    {
        var shape = new AttentionShape(2, 70, 90, 4, 2, 64);
        string[] masks = ["qlen+klen", "causal+klen", "win(9,4)", "qlen+klen+causal+randomh(16,24,2)"];
        foreach (string m in masks)
        {
            var options = new AttentionOptions { Mask = MaskSpec.Build(m, shape, 15) };
            var half = AttentionInputs<Half>.Random(shape, 15);
            half.AssertMatchesReference(Run(half, options), options, $"f16 {m} {_attention.LastKernelName}");
        }
        var wide = new AttentionShape(1, 33, 40, 2, 1, 256);
        var causal = new AttentionOptions { Mask = AttentionMask.CausalMask };
        var bf16 = AttentionInputs<BFloat16>.Random(wide, 16);
        bf16.AssertMatchesReference(Run(bf16, causal), causal, $"bf16 hd256 {_attention.LastKernelName}");
        var f32 = AttentionInputs<float>.Random(shape, 17);
        var sparse = new AttentionOptions { Mask = MaskSpec.Build("klen+custom(16,16)", shape, 17) };
        f32.AssertMatchesReference(Run(f32, sparse), sparse, $"f32 {_attention.LastKernelName}");
    }

    private DeviceTensor<Half> Filled(int b, int s, int h, int d, float value)
    {
        var t = DeviceTensor<Half>.AllocateBshd(Context, b, s, h, d);
        t.CopyFrom(Num.Filled<Half>(b * s * h * d, value));
        return t;
    }

    private EngineResult Run<T>(AttentionInputs<T> inputs, AttentionOptions options, CudaStream? stream = null) where T : unmanaged
    {
        var s = inputs.Shape;
        using var q = DeviceTensor<T>.AllocateBshd(Context, s.Batch, s.QueryLength, s.Heads, s.HeadDim);
        using var k = DeviceTensor<T>.AllocateBshd(Context, s.Batch, s.KeyLength, s.KvHeads, s.HeadDim);
        using var v = DeviceTensor<T>.AllocateBshd(Context, s.Batch, s.KeyLength, s.KvHeads, s.HeadDim);
        using var o = DeviceTensor<T>.AllocateBshd(Context, s.Batch, s.QueryLength, s.Heads, s.HeadDim);
        using var lse = DeviceTensor<float>.Allocate(Context, s.Batch, s.Heads, s.QueryLength);
        q.CopyFrom(inputs.Q);
        k.CopyFrom(inputs.K);
        v.CopyFrom(inputs.V);
        o.CopyFrom(Num.Filled<T>((int)o.ElementCount, float.NaN));
        lse.CopyFrom(Num.Filled<float>((int)lse.ElementCount, float.NaN));
        _attention.Forward(q, k, v, o, options, lse, stream);
        stream?.Synchronize();
        Context.Synchronize();
        var outHost = new T[o.ElementCount];
        o.CopyTo(outHost);
        var lseHost = new float[lse.ElementCount];
        lse.CopyTo(lseHost);
        return new EngineResult(Num.ToFloats<T>(outHost), lseHost, null);
    }
}
