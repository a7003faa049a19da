// What is measured: the dense attention sweep, block-sparse layouts against dense, and the fp32 GEMM.
using System.Numerics.Tensors;
using FastAttention.Cpu;

namespace FastAttention.Bench;

/// <summary>One dense attention shape to time.</summary>
internal sealed record DenseCase(string DType, int HeadDim, int SeqLen, bool Causal)
{
    /// <summary>The attention shape: B = 1, H = Hkv = 8, Sq = Sk.</summary>
    public AttentionShape Shape => new(Sweeps.Batch, SeqLen, SeqLen, Sweeps.Heads, Sweeps.KvHeads, HeadDim);
}

/// <summary>One measured dense row.</summary>
internal sealed record DenseRow(DenseCase Case, Measurement Time)
{
    /// <summary>Achieved GFLOP/s (FlashAttention's count, <see cref="AttentionShape.Flops"/>).</summary>
    public double GFlops => Case.Shape.Flops(Case.Causal) / (Time.MedianMs * 1e-3) / 1e9;
}

/// <summary>One sgemm shape to time: <c>C[M, N] = op(A)·op(B)</c>, row-major, no bias, beta = 0.</summary>
/// <param name="Layout">"NN", "NT" (<c>X·Wᵀ</c>, the projection layout), "TN" or "TT".</param>
internal sealed record SgemmCase(int M, int N, int K, string Layout)
{
    public bool TransA => Layout[0] == 'T';
    public bool TransB => Layout[1] == 'T';
    public double Flops => 2.0 * M * N * K;
}

/// <summary>One measured sgemm row.</summary>
internal sealed record SgemmRow(SgemmCase Case, Measurement Time)
{
    /// <summary>Achieved GFLOP/s (2·M·N·K per call).</summary>
    public double GFlops => Case.Flops / (Time.MedianMs * 1e-3) / 1e9;

    /// <summary>Bytes of B (K·N floats) per second, in GB/s (1e9 bytes).</summary>
    public double BGBs => 4.0 * Case.K * Case.N / (Time.MedianMs * 1e-3) / 1e9;
}

/// <summary>
/// One measured block-sparse row: the layout timed in alternating blocks with dense attention on the same inputs.
/// <paramref name="Ratio"/> is the median over rounds of (layout block median ÷ dense block median), so drift in
/// the machine's load between rows does not move the row's speedup or overhead.
/// </summary>
internal sealed record SparseRow(string Pattern, string Parameters, double TargetDensity, double Density, Measurement Time, Measurement Dense, double Ratio)
{
    /// <summary>Dense time / this time, from the same rounds.</summary>
    public double Speedup => 1 / Ratio;

    /// <summary>time / (density · dense time) − 1 from the same rounds: cost beyond the skipped work (0 = perfectly proportional).</summary>
    public double Overhead => Ratio / Density - 1;
}

/// <summary>The sweeps: which shapes the quick and full runs time, and how.</summary>
internal static class Sweeps
{
    public const int Batch = 1;
    public const int Heads = 8;
    public const int KvHeads = 8;

    /// <summary>Block-sparse geometry: S = 4096 (256 in a smoke run), D = 64, 64 x 64 blocks.</summary>
    public const int SparseSeq = 4096;
    public const int SmokeSparseSeq = 256;
    public const int SparseHeadDim = 64;
    public const int SparseBlock = 64;
    public static readonly double[] SparseDensities = [0.1, 0.25, 0.5];

    /// <summary>
    /// Dense cases: smoke = fp32, D=32, S 32 and 64; quick = fp32, D=64 S 1024..2048 and D=128 S 1024..4096;
    /// full = fp32/fp16/bf16, D 64 and 128, S 128..16384. Causal and not for each.
    /// <paramref name="seqs"/>, <paramref name="headDims"/> and <paramref name="dtypes"/> replace the defaults when given.
    /// </summary>
    public static IReadOnlyList<DenseCase> DenseCases(RunScale scale, IReadOnlyList<int>? seqs = null, IReadOnlyList<int>? headDims = null,
        IReadOnlyList<string>? dtypes = null)
    {
        var cases = new List<DenseCase>();
        bool full = scale == RunScale.Full;
        string[] types = dtypes?.ToArray() ?? (full ? ["fp32", "fp16", "bf16"] : ["fp32"]);
        int[] dims = headDims?.ToArray() ?? (scale == RunScale.Smoke ? [32] : [64, 128]);
        foreach (string dtype in types)
        {
            foreach (int d in dims)
            {
                int[] lengths = seqs?.ToArray() ?? scale switch
                {
                    RunScale.Smoke => [32, 64],
                    RunScale.Quick => d == 128 ? [1024, 2048, 4096] : [1024, 2048],
                    _ => [128, 256, 512, 1024, 2048, 4096, 8192, 16384],
                };
                foreach (int s in lengths)
                {
                    foreach (bool causal in new[] { false, true })
                    {
                        cases.Add(new DenseCase(dtype, d, s, causal));
                    }
                }
            }
        }
        return cases;
    }

    /// <summary>
    /// sgemm cases: quick = 2048³ plain and projection layout plus a decode-sized projection
    /// (1 x 4096 x 4096); full = 512..4096 cubes in both layouts, 2048³ in all four, and projections
    /// of 1, 16, 128 and 512 rows through a 4096 x 4096 weight.
    /// </summary>
    public static IReadOnlyList<SgemmCase> SgemmCases(RunScale scale)
    {
        var cases = new List<SgemmCase>();
        if (scale == RunScale.Smoke)
        {
            return [new SgemmCase(64, 64, 64, "NN"), new SgemmCase(64, 64, 64, "NT"), new SgemmCase(1, 256, 256, "NT")];
        }
        bool full = scale == RunScale.Full;
        foreach (int size in full ? new[] { 512, 1024, 2048, 4096 } : [2048])
        {
            string[] layouts = full && size == 2048 ? ["NN", "NT", "TN", "TT"] : ["NN", "NT"];
            foreach (string layout in layouts) cases.Add(new SgemmCase(size, size, size, layout));
        }
        foreach (int rows in full ? new[] { 1, 16, 128, 512 } : [1])
        {
            cases.Add(new SgemmCase(rows, 4096, 4096, "NT"));
        }
        return cases;
    }

    /// <summary>Times every sgemm case; operands are random in [-1, 1), allocated per case.</summary>
    public static List<SgemmRow> RunSgemm(IReadOnlyList<SgemmCase> cases, int threads, RunPolicy policy, Action<string> log)
    {
        var rows = new List<SgemmRow>();
        foreach (var c in cases)
        {
            var rng = new Random(4321 + c.M + c.K);
            float[] Fill(long n)
            {
                var a = GC.AllocateUninitializedArray<float>(checked((int)n));
                for (int i = 0; i < a.Length; i++) a[i] = rng.NextSingle() * 2f - 1f;
                return a;
            }
            float[] a = Fill((long)c.M * c.K), b = Fill((long)c.K * c.N), result = new float[(long)c.M * c.N];
            int lda = c.TransA ? c.M : c.K, ldb = c.TransB ? c.K : c.N;
            var m = Runner.Measure(() => CpuGemm.Sgemm(c.TransA, c.TransB, c.M, c.N, c.K, 1f, a, lda, b, ldb, 0f, result, c.N,
                maxDegreeOfParallelism: threads), policy);
            var row = new SgemmRow(c, m);
            log($"sgemm {c.Layout} {c.M}x{c.N}x{c.K}: {m.MedianMs:F2} ms ({m.Runs} runs), {row.GFlops:F1} GFLOP/s");
            rows.Add(row);
        }
        return rows;
    }

    /// <summary>Times every dense case; inputs are allocated once per (dtype, D, S) and shared by causal/non-causal.</summary>
    public static List<DenseRow> RunDense(IReadOnlyList<DenseCase> cases, int threads, RunPolicy policy, Action<string> log)
    {
        var rows = new List<DenseRow>();
        foreach (var group in cases.GroupBy(c => (c.DType, c.HeadDim, c.SeqLen)))
        {
            var first = group.First();
            var inputs = AttentionInputs.Create(first.DType, first.Shape, seed: 1234 + first.SeqLen + first.HeadDim);
            foreach (var c in group)
            {
                var options = new AttentionOptions
                {
                    Mask = c.Causal ? AttentionMask.CausalMask : AttentionMask.None,
                    MaxDegreeOfParallelism = threads,
                };
                var m = Runner.Measure(() => inputs.Forward(options), policy);
                var row = new DenseRow(c, m);
                log($"{c.DType} D={c.HeadDim} S={c.SeqLen} {(c.Causal ? "causal" : "non-causal")}: " +
                    $"{m.MedianMs:F2} ms ({m.Runs} runs), {row.GFlops:F1} GFLOP/s");
                rows.Add(row);
            }
        }
        return rows;
    }

    /// <summary>
    /// Times dense attention at S (non-causal, D = 64), then the same through a fully kept block mask and
    /// Local, Strided and Random layouts at each target density, each in alternating blocks with dense.
    /// </summary>
    public static (Measurement Dense, List<SparseRow> Rows) RunSparse(int seq, int threads, RunPolicy policy, Action<string> log)
    {
        var shape = new AttentionShape(Batch, seq, seq, Heads, KvHeads, SparseHeadDim);
        var inputs = AttentionInputs.Create("fp32", shape, seed: 99);
        var denseOptions = new AttentionOptions { MaxDegreeOfParallelism = threads };
        var dense = Runner.Measure(() => inputs.Forward(denseOptions), policy);
        log($"block-sparse baseline, dense S={seq} D={SparseHeadDim}: {dense.MedianMs:F2} ms");

        var layouts = new List<(string Pattern, string Parameters, double Target, BlockSparseMask Mask)>
        {
            ("Dense (all blocks kept)", "-", 1.0,
                BlockSparseMask.Dense(seq, seq, SparseBlock, SparseBlock)),
        };
        foreach (double target in SparseDensities)
        {
            layouts.Add(ClosestLocal(seq, target));
            layouts.Add(ClosestStrided(seq, target));
            layouts.Add(ClosestRandom(seq, target));
        }

        var rows = new List<SparseRow>();
        foreach (var (pattern, parameters, target, mask) in layouts)
        {
            var options = new AttentionOptions { Mask = new AttentionMask { BlockMask = mask }, MaxDegreeOfParallelism = threads };
            var (denseAlongside, m, ratio) = Runner.MeasureAlternating(() => inputs.Forward(denseOptions), () => inputs.Forward(options), policy);
            var row = new SparseRow(pattern, parameters, target, mask.Density, m, denseAlongside, ratio);
            log($"{pattern} {parameters}: density {mask.Density:F3}, {m.MedianMs:F2} ms, speedup {row.Speedup:F2}x");
            rows.Add(row);
        }
        return (dense, rows);
    }

    // Pattern parameters are chosen by search so the measured density lands as close as possible to the target.

    private static (string, string, double, BlockSparseMask) ClosestLocal(int seq, double target)
    {
        int blocks = Blocks(seq);
        var best = Enumerable.Range(0, blocks)
            .Select(w => (w, mask: BlockSparseMask.Local(seq, seq, SparseBlock, SparseBlock, w, w)))
            .MinBy(x => Math.Abs(x.mask.Density - target));
        return ("Local", $"window ±{best.w} blocks", target, best.mask);
    }

    private static (string, string, double, BlockSparseMask) ClosestStrided(int seq, double target)
    {
        const int window = 1;
        var best = Enumerable.Range(1, Blocks(seq))
            .Select(s => (s, mask: BlockSparseMask.Strided(seq, seq, SparseBlock, SparseBlock, window, window, s)))
            .MinBy(x => Math.Abs(x.mask.Density - target));
        return ("Strided", $"window ±{window}, stride {best.s}", target, best.mask);
    }

    private static (string, string, double, BlockSparseMask) ClosestRandom(int seq, double target)
    {
        var best = Enumerable.Range(0, Blocks(seq) + 1)
            .Select(n => (n, mask: BlockSparseMask.Random(seq, seq, SparseBlock, SparseBlock, n, seed: 42, heads: Heads)))
            .MinBy(x => Math.Abs(x.mask.Density - target));
        return ("Random", $"{best.n} blocks/row + diagonal, per head", target, best.mask);
    }

    private static int Blocks(int seq) => (seq + SparseBlock - 1) / SparseBlock;
}

/// <summary>Q, K, V, O of one shape, random in [-1, 1), allocated once; <see cref="Forward"/> runs one attention call.</summary>
internal abstract class AttentionInputs
{
    public abstract void Forward(AttentionOptions options);

    public static AttentionInputs Create(string dtype, AttentionShape shape, int seed) => dtype switch
    {
        "fp32" => new Typed<float>(shape, seed, f => f),
        "fp16" => new Typed<Half>(shape, seed, f => (Half)f),
        "bf16" => new Typed<BFloat16>(shape, seed, f => (BFloat16)f),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "expected fp32, fp16 or bf16"),
    };

    private sealed class Typed<T> : AttentionInputs
        where T : unmanaged
    {
        private readonly AttentionShape _shape;
        private readonly T[] _q, _k, _v, _o;

        public Typed(AttentionShape shape, int seed, Func<float, T> convert)
        {
            _shape = shape;
            var rng = new Random(seed);
            T[] Fill(long n)
            {
                var a = new T[checked((int)n)];
                for (int i = 0; i < a.Length; i++) a[i] = convert(rng.NextSingle() * 2f - 1f);
                return a;
            }
            long qn = (long)shape.Batch * shape.QueryLength * shape.Heads * shape.HeadDim;
            long kn = (long)shape.Batch * shape.KeyLength * shape.KvHeads * shape.HeadDim;
            _q = Fill(qn);
            _k = Fill(kn);
            _v = Fill(kn);
            _o = new T[qn];
        }

        public override void Forward(AttentionOptions options)
        {
            var s = _shape;
            CpuAttention.Forward<T>(
                Bshd(_q, s.Batch, s.QueryLength, s.Heads, s.HeadDim),
                Bshd(_k, s.Batch, s.KeyLength, s.KvHeads, s.HeadDim),
                Bshd(_v, s.Batch, s.KeyLength, s.KvHeads, s.HeadDim),
                Bshd(_o, s.Batch, s.QueryLength, s.Heads, s.HeadDim),
                options);
        }

        // Contiguous [B, S, H, D] with the library's default strides (System.Numerics.Tensors 10.x
        // wants stride 0 on every length-1 dimension, and rejects any other).
        private static TensorSpan<T> Bshd(T[] data, int b, int s, int h, int d) => new(data, [b, s, h, d]);
    }
}
