// Incremental decoding equals a full causal forward: append a sequence's tokens to a cache step by step
// (1, 7 or 32 at a time), decode the new tokens' query rows after each step, and the stacked outputs
// must equal CpuAttention.Forward over the whole sequence with causal masking (and the same window).
// Two sequences decode together with different lengths (one starts with a prefix already cached), so
// bottom-right alignment is checked per batch entry; the paged cache interleaves their pages.

using FastAttention.Cpu.Caching;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Caching;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class IncrementalDecodeTests
{
    private const int T0 = 300, Prefix = 45, D = 64, PageSize = 16;

    private static IEnumerable<TestCaseData> Cases()
    {
        foreach (var (h, hkv, name) in new[] { (4, 4, "MHA"), (8, 2, "GQA4"), (4, 1, "MQA") })
        {
            foreach (int window in new[] { -1, 40 })
            {
                foreach (int chunk in new[] { 1, 7, 32 })
                {
                    yield return new TestCaseData("f32", h, hkv, window, chunk)
                        .SetName($"Incremental(f32 {name} H{h}/{hkv}{(window >= 0 ? $" win({window},0)" : "")} chunk {chunk})");
                }
            }
        }
        yield return new TestCaseData("f16", 8, 2, 40, 7).SetName("Incremental(f16 GQA4 H8/2 win(40,0) chunk 7)");
        yield return new TestCaseData("bf16", 4, 1, -1, 1).SetName("Incremental(bf16 MQA H4/1 chunk 1)");
    }

    [TestCaseSource(nameof(Cases))]
    public void StackedDecodeStepsEqualCausalForward(string dtype, int h, int hkv, int window, int chunk)
    {
        switch (dtype)
        {
            case "f32": Run<float>(h, hkv, window, chunk); break;
            case "f16": Run<Half>(h, hkv, window, chunk); break;
            default: Run<BFloat16>(h, hkv, window, chunk); break;
        }
    }

    private static void Run<T>(int heads, int hkv, int window, int chunk) where T : unmanaged
    {
        var rng = new Rng((ulong)(heads * 1000 + hkv * 100 + window + chunk * 7));
        int[] total = [T0, Prefix + T0];
        var q = total.Select(n => rng.Normal<T>(n * heads * D)).ToArray();
        var k = total.Select(n => rng.Normal<T>(n * hkv * D)).ToArray();
        var v = total.Select(n => rng.Normal<T>(n * hkv * D)).ToArray();
        var mask = new AttentionMask { Causal = true, WindowLeft = window, WindowRight = window >= 0 ? 0 : -1 };
        var options = new AttentionOptions { Mask = mask };

        // Expected: one causal forward per sequence over all its tokens.
        var expected = new float[2][];
        for (int b = 0; b < 2; b++)
        {
            var shape = new AttentionShape(1, total[b], total[b], heads, hkv, D);
            var inputs = new AttentionInputs<T> { Shape = shape, Q = q[b], K = k[b], V = v[b] };
            var forward = inputs.Run(options);
            expected[b] = forward.Output;
            if (!Num.IsHalfPrecision<T>()) inputs.AssertMatchesReference(forward, options, "forward itself");
        }

        // Both caches start all-NaN: every slot not yet appended is poison.
        T nan = Num.FromFloat<T>(float.NaN);
        var contiguous = new KvCache<T>(2, Prefix + T0 + 3, hkv, D);
        contiguous.KeyStorage.Fill(nan);
        contiguous.ValueStorage.Fill(nan);
        var paged = new PagedKvCache<T>(2 * ((Prefix + T0) / PageSize + 2), PageSize, hkv, D);
        paged.KeyStorage.Fill(nan);
        paged.ValueStorage.Fill(nan);
        int[] ids = [paged.CreateSequence(), paged.CreateSequence()];
        int token = hkv * D;
        AppendTokens(contiguous, paged, ids, 1, k[1][..(Prefix * token)], v[1][..(Prefix * token)], Prefix, hkv);

        var decodedContiguous = new float[2][];
        var decodedPaged = new float[2][];
        for (int b = 0; b < 2; b++)
        {
            decodedContiguous[b] = new float[total[b] * heads * D];
            decodedPaged[b] = new float[total[b] * heads * D];
        }
        int row = heads * D;
        for (int start = 0; start < T0; start += chunk)
        {
            int n = Math.Min(chunk, T0 - start);
            var query = new T[2 * n * row];
            for (int b = 0; b < 2; b++)
            {
                int first = start + (b == 1 ? Prefix : 0);
                AppendTokens(contiguous, paged, ids, b, k[b][(first * token)..((first + n) * token)], v[b][(first * token)..((first + n) * token)], n, hkv);
                Array.Copy(q[b], first * row, query, b * n * row, n * row);
            }
            var (oc, _) = CacheTestSupport.Decode(contiguous, query, n, heads, options);
            var (op, _) = CacheTestSupport.Decode(paged, ids, query, n, heads, options);
            for (int b = 0; b < 2; b++)
            {
                int first = start + (b == 1 ? Prefix : 0);
                Array.Copy(oc, b * n * row, decodedContiguous[b], first * row, n * row);
                Array.Copy(op, b * n * row, decodedPaged[b], first * row, n * row);
            }
        }

        for (int b = 0; b < 2; b++)
        {
            int skip = b == 1 ? Prefix : 0; // the prefix was never decoded
            int[] dims = [total[b] - skip, heads, D];
            var want = expected[b][(skip * row)..].Select(x => (double)x).ToArray();
            if (Num.IsHalfPrecision<T>())
            {
                // Both sides are rounded to T: allow a couple of ulps of T at the output's magnitude.
                double ulp = typeof(T) == typeof(Half) ? 1.0 / 1024 : 1.0 / 128;
                Tolerance.AssertClose(decodedContiguous[b][(skip * row)..], want, $"sequence {b}: KvCache steps vs forward", dims, 1e-5, 2 * ulp);
                Tolerance.AssertClose(decodedPaged[b][(skip * row)..], want, $"sequence {b}: paged steps vs forward", dims, 1e-5, 2 * ulp);
            }
            else
            {
                Tolerance.AssertClose(decodedContiguous[b][(skip * row)..], want, $"sequence {b}: KvCache steps vs forward", dims);
                Tolerance.AssertClose(decodedPaged[b][(skip * row)..], want, $"sequence {b}: paged steps vs forward", dims);
            }
        }
    }

    private static void AppendTokens<T>(KvCache<T> contiguous, PagedKvCache<T> paged, int[] ids, int b, T[] k, T[] v, int n, int hkv) where T : unmanaged
    {
        TensorSpan<T> View(T[] x) => Views.Strided(x, [n, hkv, D], [hkv * D, D, 1]);
        contiguous.Append(b, View(k), View(v));
        paged.Append(ids[b], View(k), View(v));
    }
}
