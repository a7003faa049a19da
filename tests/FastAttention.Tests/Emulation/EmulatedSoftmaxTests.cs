// The fused softmax kernels (softmax.cu: plain, group, warp, block, online) run on the kernel emulator through the real host
// planning (SoftmaxParams.Create, SoftmaxPlan.For, SoftmaxMaskData), compared with the double reference and the CPU
// softmax exactly as CudaSoftmaxTests does on a GPU. A small multiprocessor count makes the grid smaller than the
// row count, so the grid-stride loops run too. Destinations start as NaN; guard zones are checked.
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Emulation;

[TestFixture]
[Category("Emulated")]
public sealed class EmulatedSoftmaxTests
{
    // Row lengths reach every kernel and its edges: group (<= 256), warp (<= 1024), block (<= 8192), online (> 8192).
    private static readonly (int B, int H, int Sq, int Sk, float Scale, string Mask, int Multiprocessors)[] Shapes =
    [
        (2, 3, 17, 1, 1f, "none", 2),
        (2, 2, 9, 17, 0.5f, "causal", 1),
        (1, 4, 33, 113, 1f, "win(5,3)+klen", 3),
        (2, 2, 40, 203, 1.5f, "klen0+causal", 2),
        (1, 2, 16, 1024, 1f, "randomh(16,64,4)", 1),
        (2, 1, 4, 1025, -0.7f, "causal+qlen0", 1),
        (1, 1, 3, 4097, 1f, "custom(4,128)", 1),
        (1, 1, 2, 8193, 0.3f, "causal", 1),
        (1, 2, 5, 33, 0f, "win(4,4)", 1),
        // The group kernel's longest rows over 300 rows: 16 CTAs of 16 rows on one multiprocessor, then a second
        // sweep with rows past the end; and the warp kernel's partly filled chunks.
        (2, 3, 50, 256, 1f, "causal+klen", 1),
        (1, 3, 17, 300, 0.8f, "win(40,-1)", 1),
    ];

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (CudaKernelVariant variant in new[] { CudaKernelVariant.Plain, CudaKernelVariant.Tuned })
            foreach (string dtype in new[] { "f32", "f16", "bf16" })
                for (int i = 0; i < Shapes.Length; i++)
                {
                    var s = Shapes[i];
                    yield return new TestCaseData(variant, dtype, i)
                        .SetName($"EmulatedSoftmax({variant} {dtype} [{s.B},{s.H},{s.Sq},{s.Sk}] scale={s.Scale} {s.Mask})");
                }
    }

    [OneTimeSetUp]
    public void RequireEmulator() => KernelEmulator.Require();

    [TestCaseSource(nameof(Cases))]
    public void MatchesCpuAndReference(CudaKernelVariant variant, string dtype, int shapeIndex)
    {
        switch (dtype)
        {
            case "f32": Run<float>(variant, shapeIndex); break;
            case "f16": Run<Half>(variant, shapeIndex); break;
            default: Run<BFloat16>(variant, shapeIndex); break;
        }
    }

    private static void Run<T>(CudaKernelVariant variant, int shapeIndex) where T : unmanaged
    {
        var (B, H, Sq, Sk, scale, spec, sms) = Shapes[shapeIndex];
        ulong seed = 900 + (ulong)shapeIndex;
        var mask = MaskSpec.Build(spec, new AttentionShape(B, Sq, Sk, H, H, 1), seed);
        var scores = new Rng(seed).Normal<T>(B * H * Sq * Sk, 3.0);
        var (result, kernel) = RunEmulated(scores, B, H, Sq, Sk, scale, mask, variant, sms);
        SoftmaxChecks.AssertMatches(result, scores, B, H, Sq, Sk, scale, mask, "emulated", $"{variant} {kernel} {spec} (emulated)");
    }

    [TestCase(CudaKernelVariant.Plain)]
    [TestCase(CudaKernelVariant.Tuned)]
    public void HugeLogitsStayFinite(CudaKernelVariant variant)
    {
        // Integer scores x 500: logits up to 1e4, exact in fp16; a short row (warp kernel) and a long one (online).
        foreach (int sk in new[] { 71, 8200 })
        {
            const int B = 2, H = 1, Sq = 3;
            var scores = new Rng(7).Integers<Half>(B * H * Sq * sk, -20, 20);
            var mask = new AttentionMask { Causal = true, KeyLengths = [sk, sk / 2] };
            var (result, kernel) = RunEmulated(scores, B, H, Sq, sk, 500f, mask, variant, 2);
            Tolerance.AssertNoNaN(result, $"softmax of logits 1e4 ({kernel})", [B, H, Sq, sk]);
            SoftmaxChecks.AssertMatches(result, scores, B, H, Sq, sk, 500f, mask, "emulated", $"{variant} {kernel} logits 1e4, Sk {sk} (emulated)");
        }
    }

    private static (float[] Result, string Kernel) RunEmulated<T>(T[] scores, int B, int H, int Sq, int Sk, float scale, AttentionMask mask,
        CudaKernelVariant variant, int multiprocessors) where T : unmanaged
    {
        nint[] lengths = [B, H, Sq, Sk];
        nint[] strides = [(nint)H * Sq * Sk, (nint)Sq * Sk, Sk, 1];
        CudaSoftmax.Validate(4, lengths, 4, lengths, strides, scale, mask);
        using var x = new HostBuffer<T>(scores);
        using var y = new HostBuffer<T>(Num.Filled<T>(scores.Length, float.NaN));
        SoftmaxMaskData layout = SoftmaxMaskData.LayoutOf(mask);
        using var maskData = new HostBuffer<byte>(layout.Size);
        layout.Write(mask, maskData.Span);
        KernelElementType type = KernelElementTypes.Of<T>();
        SoftmaxParams p = SoftmaxParams.Create(x.Pointer, strides, y.Pointer, strides, lengths,
            System.Runtime.CompilerServices.Unsafe.SizeOf<T>(), scale, mask, layout.Size > 0 ? maskData.Pointer : 0, layout);
        var plan = SoftmaxPlan.For(p.Rows, p.Sk, p.Unit == 1, variant, multiprocessors);
        EmulatedModule module = KernelEmulator.Load(KernelRegistry.Softmax(type));
        var args = new KernelArguments();
        args.Add(p);
        module.Launch(plan.KernelName(type), new LaunchConfig((uint)plan.Grid, (uint)plan.ThreadsPerBlock), ref args);
        x.Check("scores");
        y.Check("output");
        maskData.Check("mask data");
        return (Num.ToFloats<T>(y.Span), plan.KernelName(type));
    }
}
