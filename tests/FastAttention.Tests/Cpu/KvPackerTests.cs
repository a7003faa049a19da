// The forward's lazy K/V copy on its own: many threads asking for overlapping key ranges of different heads at
// once must each see exactly the source rows once Ensure returns (also through the all-heads, non-temporal path),
// and units nobody asked for must stay uncopied.

using System.Runtime.InteropServices;
using FastAttention.Cpu.Engine;

namespace FastAttention.Tests.Cpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed unsafe class KvPackerTests
{
    /// <summary>Floats per vector: 16 and 8 take the all-heads non-temporal path where the CPU has it, 4 the per-head copy.</summary>
    [TestCase(16, 8, 64)]
    [TestCase(8, 8, 64)]
    [TestCase(4, 8, 64)]
    [TestCase(16, 3, 80)]
    [TestCase(16, 1, 32)]
    [TestCase(16, 4, 24)]
    public void ConcurrentEnsureGivesEveryThreadTheSourceRows(int vectorFloats, int kvHeads, int headDim)
    {
        const int batch = 2, keys = 333, threads = 8, requests = 300;
        var shape = new AttentionShape(batch, 5, keys, kvHeads, kvHeads, headDim);
        int rowElements = kvHeads * headDim, elements = batch * keys * rowElements;
        // Source [B, Sk, Hkv, D]; packed [B, Hkv, Sk, D] on a 64-byte boundary, poisoned so uncopied rows show.
        float* k = Alloc(elements), v = Alloc(elements), kp = Alloc(elements), vp = Alloc(elements);
        try
        {
            for (int i = 0; i < elements; i++)
            {
                k[i] = i;
                v[i] = -i - 0.5f;
                kp[i] = float.NaN;
                vp[i] = float.NaN;
            }
            var kFrom = new View<float>(k, (nint)keys * rowElements, rowElements, headDim, 1);
            var vFrom = new View<float>(v, (nint)keys * rowElements, rowElements, headDim, 1);
            nint perHead = (nint)keys * headDim;
            var kTo = new View<float>(kp, perHead * kvHeads, headDim, perHead, 1);
            var vTo = new View<float>(vp, perHead * kvHeads, headDim, perHead, 1);
            int lastUnit = (keys - 1) / KvPacker<float>.Unit;
            using var packer = new KvPacker<float>(kFrom, kTo, vFrom, vTo, shape, vectorFloats);
            var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
            {
                var rng = new Random(100 + t);
                for (int r = 0; r < requests && failures.IsEmpty; r++)
                {
                    // Batch 1 never asks for the last unit: it must stay uncopied even on the all-heads path.
                    int b = rng.Next(batch), h = rng.Next(kvHeads);
                    int limit = b == 1 ? lastUnit * KvPacker<float>.Unit : keys;
                    int j0 = rng.Next(limit), j1 = Math.Min(limit, j0 + 1 + rng.Next(150));
                    packer.Ensure(b, h, j0, j1);
                    for (int j = j0; j < j1 && failures.IsEmpty; j++)
                    {
                        for (int x = 0; x < headDim; x++)
                        {
                            float wantK = kFrom.At(b, j, h)[x], gotK = kTo.At(b, j, h)[x];
                            float wantV = vFrom.At(b, j, h)[x], gotV = vTo.At(b, j, h)[x];
                            if (gotK != wantK || gotV != wantV)
                            {
                                failures.Add($"b={b} head={h} key={j} x={x}: K {gotK} (want {wantK}), V {gotV} (want {wantV})");
                                break;
                            }
                        }
                    }
                }
            });
            Assert.That(failures, Is.Empty, "rows read after Ensure returned");
            for (int h = 0; h < kvHeads; h++)
            {
                for (int j = lastUnit * KvPacker<float>.Unit; j < keys; j++)
                {
                    Assert.That(float.IsNaN(kTo.At(1, j, h)[0]) && float.IsNaN(vTo.At(1, j, h)[0]), Is.True,
                        $"batch 1, head {h}, key {j} lies in a unit nobody asked for but was copied");
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(k);
            NativeMemory.AlignedFree(v);
            NativeMemory.AlignedFree(kp);
            NativeMemory.AlignedFree(vp);
        }
    }

    private static float* Alloc(int floats) => (float*)NativeMemory.AlignedAlloc((nuint)floats * sizeof(float), 64);
}
