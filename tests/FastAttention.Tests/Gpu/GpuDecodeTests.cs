// GPU decode over device KV caches vs the CPU decode and the double reference (DESIGN.md section 4 tolerances), with
// every pool slot no live sequence uses filled with NaN and scrambled block tables. Each case runs the tuned kernel
// (planner's splits and a forced split count, so the combine kernel runs) and the plain kernel.
//
// A covering set: page sizes 8/16/64/256, head dims 64/128/256, GQA ratios 1/2/4/8 and MQA, q 1..16, lengths 0..20000
// (page multiples and not), causal on/off, windows, custom and negative scales, fp32/fp16/bf16.
using FastAttention.Cpu.Caching;
using FastAttention.Gpu;
using FastAttention.Runtime;
using FastAttention.Tests.Caching;
using FastAttention.Tests.Cuda;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Gpu;

public sealed class GpuDecodeTests : GpuFixture
{
    private static readonly DecodeCase[] Cases =
    [
        new("f32", [1, 37, 300, 2049], 8, 8, 64, 1, false, -1, -1, 8),
        new("f16", [20000, 17, 1023], 32, 8, 128, 1, true, -1, -1, 16),
        new("bf16", [4999, 0, 31, 640], 16, 2, 256, 2, true, -1, -1, 64),
        new("f16", [3000, 129], 8, 1, 128, 5, true, 200, 0, 256),
        new("f32", [513, 1000, 2], 4, 4, 256, 16, true, 64, -1, 16),
        new("bf16", [7777], 8, 8, 64, 3, false, 31, 5, 8),
        new("f16", [1025, 2048, 255], 32, 4, 64, 16, true, -1, -1, 64),
        new("f32", [300, 17, 4096], 8, 2, 128, 4, true, -1, -1, 256, Scale: -0.3f),
        new("f32", [12000, 5], 16, 4, 128, 1, false, 1000, -1, 16, Scale: 0.05f, Sigma: 3),
    ];

    private static IEnumerable<TestCaseData> Source()
    {
        string[] variants = ["tuned", "tuned splits=7", "plain"];
        for (int i = 0; i < Cases.Length; i++)
        {
            foreach (string v in variants) yield return new TestCaseData(Cases[i], i, v).SetName($"GpuDecode({Cases[i]}, {v})");
        }
    }

    private static GpuDecodeOptions Variant(string v) => v switch
    {
        "tuned" => GpuDecodeOptions.Default,
        "tuned splits=7" => new GpuDecodeOptions { Splits = 7 },
        _ => new GpuDecodeOptions { Kernel = DecodeKernel.Plain },
    };

    [TestCaseSource(nameof(Source))]
    public void MatchesCpuDecodeAndReference(DecodeCase c, int index, string variant)
    {
        switch (c.DType)
        {
            case "f32": Run<float>(c, index, Variant(variant)); break;
            case "f16": Run<Half>(c, index, Variant(variant)); break;
            default: Run<BFloat16>(c, index, Variant(variant)); break;
        }
    }

    private void Run<T>(DecodeCase c, int index, GpuDecodeOptions variant) where T : unmanaged
    {
        var rng = new Rng(9000 + (ulong)index);
        var histories = c.Lengths.Select(length =>
        {
            var h = new TokenHistory<T>(c.Hkv, c.D);
            h.Add(rng.Normal<T>(length * c.Hkv * c.D, c.Sigma), rng.Normal<T>(length * c.Hkv * c.D));
            return h;
        }).ToArray();
        var (cpu, gpu, ids) = GpuCacheSupport.BuildMirrored(Context, histories, c.PageSize, rng);
        using (gpu)
        {
            CacheTestSupport.PoisonUnused(cpu);
            GpuCacheSupport.PoisonUnused(gpu);
            for (int b = 0; b < ids.Length; b++)
            {
                var (k, v) = GpuCacheSupport.ReadBack(gpu, ids[b]);
                CacheTestSupport.AssertSameBits<T>(k, histories[b].Keys, $"keys of sequence {b} after the GPU appends");
                CacheTestSupport.AssertSameBits<T>(v, histories[b].Values, $"values of sequence {b} after the GPU appends");
            }
            var query = rng.Normal<T>(ids.Length * c.Q * c.H * c.D);
            var options = c.Options;
            var (og, lg) = GpuCacheSupport.Decode(gpu, ids, query, c.Q, c.H, options, variant);
            var (oc, lc) = CacheTestSupport.Decode(cpu, ids, query, c.Q, c.H, options);
            CacheTestSupport.AssertMatchesReference([($"GPU {c}", og, lg), ($"CPU {c}", oc, lc)], query, histories, c.Q, c.H, options);
            if (typeof(T) == typeof(float))
            {
                var cpuOut = oc.Select(x => (double)x).ToArray();
                Tolerance.AssertClose(og, cpuOut, "GPU vs CPU output (fp32)", [ids.Length, c.Q, c.H, c.D]);
            }
        }
    }

    [Test]
    public void ContiguousCacheDecodesThroughTheSameKernels([Values("tuned", "tuned splits=7", "plain")] string variant)
    {
        const int batch = 3, hkv = 2, heads = 8, d = 128, q = 2;
        var rng = new Rng(77);
        int[] lengths = [1500, 700, 33];
        var histories = lengths.Select(_ => new TokenHistory<Half>(hkv, d)).ToArray();
        var cpu = new KvCache<Half>(batch, 1600, hkv, d);
        using var gpu = new CudaKvCache<Half>(Context, batch, 1600, hkv, d);
        // One batched append of 20 tokens each, then ragged per-sequence appends.
        {
            var k = rng.Normal<Half>(batch * 20 * hkv * d);
            var v = rng.Normal<Half>(batch * 20 * hkv * d);
            for (int b = 0; b < batch; b++)
            {
                histories[b].Add(k[(b * 20 * hkv * d)..((b + 1) * 20 * hkv * d)], v[(b * 20 * hkv * d)..((b + 1) * 20 * hkv * d)]);
            }
            cpu.Append(Views.Bshd(k, batch, 20, hkv, d), Views.Bshd(v, batch, 20, hkv, d));
            using var kt = GpuCacheSupport.Upload(Context, k, batch, 20, hkv, d);
            using var vt = GpuCacheSupport.Upload(Context, v, batch, 20, hkv, d);
            gpu.Append(kt, vt);
            Context.Synchronize();
        }
        for (int b = 0; b < batch; b++)
        {
            while (histories[b].Length < lengths[b])
            {
                int n = Math.Min(lengths[b] - histories[b].Length, rng.Next(1, 300));
                var k = rng.Normal<Half>(n * hkv * d);
                var v = rng.Normal<Half>(n * hkv * d);
                histories[b].Add(k, v);
                cpu.Append(b, Views.Strided(k, [n, hkv, d], [hkv * d, d, 1]), Views.Strided(v, [n, hkv, d], [hkv * d, d, 1]));
                var (owner, kt, vt) = GpuCacheSupport.UploadInterleaved(Context, k, v, n, hkv, d);
                using (owner)
                {
                    gpu.Append(b, kt, vt);
                    Context.Synchronize();
                }
            }
        }
        Assert.That(gpu.Lengths.ToArray(), Is.EqualTo(lengths));
        // Poison every slot past each length.
        var keys = gpu.KeyStorage.ToArray();
        var values = gpu.ValueStorage.ToArray();
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < hkv; h++)
            {
                long row0 = ((long)b * hkv + h) * gpu.Capacity;
                for (long i = (row0 + lengths[b]) * d; i < (row0 + gpu.Capacity) * d; i++)
                {
                    keys[i] = (Half)float.NaN;
                    values[i] = (Half)float.NaN;
                }
                for (int p = 0; p < lengths[b]; p++)
                {
                    Assert.That(keys.AsSpan((int)((row0 + p) * d), d).ToArray(), Is.EqualTo(histories[b].Slice(true, p, 1).AsSpan(h * d, d).ToArray()),
                        $"key row (b {b}, h {h}, position {p}) in [B, Hkv, S, D] storage");
                }
            }
        }
        gpu.KeyStorage.CopyFrom(keys);
        gpu.ValueStorage.CopyFrom(values);

        var options = new AttentionOptions { Mask = new AttentionMask { Causal = true, WindowLeft = 500, WindowRight = -1 } };
        var query = rng.Normal<Half>(batch * q * heads * d);
        using var qt = GpuCacheSupport.Upload(Context, query, batch, q, heads, d);
        using var ot = GpuCacheSupport.Upload(Context, Num.Filled<Half>(batch * q * heads * d, float.NaN), batch, q, heads, d);
        using var lt = GpuCacheSupport.Upload(Context, Num.Filled<float>(batch * heads * q, float.NaN), batch, heads, q);
        CudaDecode.Decode(qt, gpu, ot, options, lt, Variant(variant));
        var o = new Half[batch * q * heads * d];
        ot.CopyTo(o);
        var l = new float[batch * heads * q];
        lt.CopyTo(l);
        var (oc, lc) = CacheTestSupport.Decode(cpu, query, q, heads, options);
        CacheTestSupport.AssertMatchesReference([("GPU contiguous", Num.ToFloats<Half>(o), l), ("CPU contiguous", oc, lc)], query, histories, q, heads, options);
    }

    [Test]
    public void SoftcapMatchesADoubleReference([Values] DecodeKernel kernel)
    {
        const int hkv = 2, heads = 8, d = 64, q = 3, cap = 5;
        var rng = new Rng(5);
        int[] lengths = [900, 45];
        var histories = lengths.Select(n =>
        {
            var h = new TokenHistory<float>(hkv, d);
            h.Add(rng.Normal<float>(n * hkv * d, 2), rng.Normal<float>(n * hkv * d));
            return h;
        }).ToArray();
        var (_, gpu, ids) = GpuCacheSupport.BuildMirrored(Context, histories, 16, rng);
        using (gpu)
        {
            GpuCacheSupport.PoisonUnused(gpu);
            var query = rng.Normal<float>(ids.Length * q * heads * d);
            var options = new AttentionOptions { Mask = AttentionMask.CausalMask, Scale = 0.4f };
            var (o, lse) = GpuCacheSupport.Decode(gpu, ids, query, q, heads, options, new GpuDecodeOptions { Softcap = cap, Kernel = kernel, Splits = 3 });
            var expected = new double[o.Length];
            var expectedLse = new double[lse.Length];
            int g = heads / hkv;
            for (int b = 0; b < ids.Length; b++)
            {
                int len = lengths[b];
                var k = histories[b].Keys;
                var v = histories[b].Values;
                for (int i = 0; i < q; i++)
                {
                    for (int h = 0; h < heads; h++)
                    {
                        int last = Math.Min(len - 1, i + len - q);
                        var logits = new double[last + 1];
                        double max = double.NegativeInfinity;
                        for (int j = 0; j <= last; j++)
                        {
                            double dot = 0;
                            for (int x = 0; x < d; x++) dot += (double)query[((b * q + i) * heads + h) * d + x] * k[(j * hkv + h / g) * d + x];
                            logits[j] = cap * Math.Tanh(0.4 * dot / cap);
                            max = Math.Max(max, logits[j]);
                        }
                        double sum = 0;
                        for (int j = 0; j <= last; j++) sum += Math.Exp(logits[j] - max);
                        for (int x = 0; x < d; x++)
                        {
                            double acc = 0;
                            for (int j = 0; j <= last; j++) acc += Math.Exp(logits[j] - max) * v[(j * hkv + h / g) * d + x];
                            expected[((b * q + i) * heads + h) * d + x] = acc / sum;
                        }
                        expectedLse[(b * heads + h) * q + i] = max + Math.Log(sum);
                    }
                }
            }
            Tolerance.AssertClose(o, expected, $"softcap {cap} output ({kernel})", [ids.Length, q, heads, d]);
            Tolerance.AssertClose(lse, expectedLse, $"softcap {cap} LSE ({kernel})", [ids.Length, heads, q]);
        }
    }

    [Test]
    public void IncrementalDecodeOver256StepsEqualsAOneShotCausalPrefillOnGpuAndCpu()
    {
        const int steps = 256, prefix = 45, heads = 8, hkv = 2, d = 128, page = 16;
        var rng = new Rng(256);
        int[] total = [steps, prefix + steps];
        var q = total.Select(n => rng.Normal<Half>(n * heads * d)).ToArray();
        var k = total.Select(n => rng.Normal<Half>(n * hkv * d)).ToArray();
        var v = total.Select(n => rng.Normal<Half>(n * hkv * d)).ToArray();
        var options = new AttentionOptions { Mask = AttentionMask.CausalMask };
        int row = heads * d, token = hkv * d;
        using var gpu = new CudaPagedKvCache<Half>(Context, 2 * (total[1] / page + 2), page, hkv, d);
        int[] ids = [gpu.CreateSequence(), gpu.CreateSequence()];
        {
            var (owner, kt, vt) = GpuCacheSupport.UploadInterleaved(Context, k[1][..(prefix * token)], v[1][..(prefix * token)], prefix, hkv, d);
            using (owner)
            {
                gpu.Append([ids[1]], [prefix], kt, vt);
                Context.Synchronize();
            }
        }
        GpuCacheSupport.PoisonUnused(gpu);
        var stacked = new float[2 * steps * row];
        var stackedLse = new float[2 * heads * steps];
        using var kStep = DeviceTensor<Half>.Allocate(Context, 2, 1, hkv, d);
        using var vStep = DeviceTensor<Half>.Allocate(Context, 2, 1, hkv, d);
        using var qStep = DeviceTensor<Half>.Allocate(Context, 2, 1, heads, d);
        using var oStep = DeviceTensor<Half>.Allocate(Context, 2, 1, heads, d);
        using var lStep = DeviceTensor<float>.Allocate(Context, 2, heads, 1);
        var hostK = new Half[2 * token];
        var hostV = new Half[2 * token];
        var hostQ = new Half[2 * row];
        var hostO = new Half[2 * row];
        var hostL = new float[2 * heads];
        for (int s = 0; s < steps; s++)
        {
            for (int b = 0; b < 2; b++)
            {
                int p = s + (b == 1 ? prefix : 0);
                Array.Copy(k[b], p * token, hostK, b * token, token);
                Array.Copy(v[b], p * token, hostV, b * token, token);
                Array.Copy(q[b], p * row, hostQ, b * row, row);
            }
            kStep.CopyFrom(hostK);
            vStep.CopyFrom(hostV);
            qStep.CopyFrom(hostQ);
            gpu.Append(ids, kStep, vStep);
            CudaDecode.Decode(qStep, gpu, ids, oStep, options, lStep);
            oStep.CopyTo(hostO);
            lStep.CopyTo(hostL);
            for (int b = 0; b < 2; b++)
            {
                for (int x = 0; x < row; x++) stacked[(b * steps + s) * row + x] = (float)hostO[b * row + x];
                for (int h = 0; h < heads; h++) stackedLse[(b * heads + h) * steps + s] = hostL[b * heads + h];
            }
        }

        // The same rows at once: decode with q = 256 (a causal prefill through the decode path), tuned and plain.
        var query = new Half[2 * steps * row];
        for (int b = 0; b < 2; b++) Array.Copy(q[b], (total[b] - steps) * row, query, b * steps * row, steps * row);
        var (oneShot, oneShotLse) = GpuCacheSupport.Decode(gpu, ids, query, steps, heads, options, GpuDecodeOptions.Default);
        var (plain, plainLse) = GpuCacheSupport.Decode(gpu, ids, query, steps, heads, options, new GpuDecodeOptions { Kernel = DecodeKernel.Plain });

        // CPU: a causal forward over each whole sequence; its last 256 rows.
        var cpu = new float[2 * steps * row];
        var cpuLse = new float[2 * heads * steps];
        for (int b = 0; b < 2; b++)
        {
            var shape = new AttentionShape(1, total[b], total[b], heads, hkv, d);
            var inputs = new AttentionInputs<Half> { Shape = shape, Q = q[b], K = k[b], V = v[b] };
            var forward = inputs.Run(options);
            int skip = total[b] - steps;
            Array.Copy(forward.Output, skip * row, cpu, b * steps * row, steps * row);
            for (int h = 0; h < heads; h++) Array.Copy(forward.LogSumExp!, h * total[b] + skip, cpuLse, (b * heads + h) * steps, steps);
        }

        var histories = Enumerable.Range(0, 2).Select(b =>
        {
            var h = new TokenHistory<Half>(hkv, d);
            h.Add(k[b], v[b]);
            return h;
        }).ToArray();
        CacheTestSupport.AssertMatchesReference(
            [("GPU incremental", stacked, stackedLse), ("GPU one-shot tuned", oneShot, oneShotLse), ("GPU one-shot plain", plain, plainLse), ("CPU forward", cpu, cpuLse)],
            query, histories, steps, heads, options);
    }
}
