// Blocked, packed, multithreaded fp32 GEMM over the engine's FMA micro-kernel (Goto/BLIS loop nest).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using FastAttention.Cpu.Engine;

namespace FastAttention.Cpu.Gemm;

/// <summary>
/// A validated sgemm call: <c>C[M, N] = Alpha·op(A)·op(B) + Beta·C (+ Bias per column)</c>, row-major
/// storage, pinned pointers. <see cref="Bias"/> is null when there is none.
/// </summary>
internal readonly unsafe struct GemmProblem
{
    public required bool TransA { get; init; }
    public required bool TransB { get; init; }
    public required int M { get; init; }
    public required int N { get; init; }
    public required int K { get; init; }
    public required float Alpha { get; init; }
    public required float Beta { get; init; }
    public required float* A { get; init; }
    public required nint Lda { get; init; }
    public required float* B { get; init; }
    public required nint Ldb { get; init; }
    public required float* C { get; init; }
    public required nint Ldc { get; init; }
    public required float* Bias { get; init; }
    /// <summary>Worker threads allowed (&gt;= 1).</summary>
    public required int Parallelism { get; init; }

    /// <summary>Address of op(A)[i, p].</summary>
    public float* AAt(int i, int p) => TransA ? A + p * Lda + i : A + i * Lda + p;

    /// <summary>Address of op(B)[p, j].</summary>
    public float* BAt(int p, int j) => TransB ? B + j * Ldb + p : B + p * Ldb + j;
}

/// <summary>
/// Cache blocking of the sgemm (fp32 elements). Chosen for this machine's caches (L1d 48 KB, L2 1 MB
/// per core, L3 shared) and the 6 x 2W micro-kernel, then confirmed by measurement (see the
/// benchmark's sgemm section):
/// <list type="bullet">
/// <item><see cref="KC"/> = 512: an A strip (6 x kc = 12 KB) stays in L1 while the kernel walks the B
/// panels; a deep k block halves the C tile loads/stores per flop against kc = 256.</item>
/// <item><see cref="NC"/> = 256 columns: a worker's packed B block (kc x nc = 512 KB) sits in its own
/// L2 and is streamed by every A strip (one 2W-float row per k step, well inside L2 bandwidth).</item>
/// <item><see cref="MC"/> = 3072 rows: the shared packed A block (mc x kc, up to 6 MB) lives in L3; each
/// 12 KB strip is read once per B block, so B is repacked only once per 3072 rows of C.</item>
/// </list>
/// Measured at 2048³ (AVX-512, a loaded machine, so differences under ~5% are noise): on one thread
/// kc/nc = 512/256, 256/512 and 384/256 tie (~190 GFLOP/s, 90% of the bare kernel's rate) and
/// 768/128, 1024/128 are a few percent lower; on two threads 512/256 led 256/512 by 5-10%.
/// </summary>
internal static class GemmBlocking
{
    /// <summary>Rows per micro-kernel block (the kernel's register block).</summary>
    public const int MR = MicroKernel<V256, Vector256<float>>.MaxRows;

    /// <summary>Depth of a k block.</summary>
    public const int KC = 512;

    /// <summary>Columns of a worker's B block (rounded to whole panels).</summary>
    public const int NC = 256;

    /// <summary>Rows of the shared A block (a multiple of <see cref="MR"/>).</summary>
    public const int MC = 3072;

    /// <summary>Smallest flop count (2·m·n·k) per worker thread worth a thread hand-off (~10 µs of one core).</summary>
    public const long MinFlopsPerThread = 2_000_000;
}

/// <summary>Entry point of the packed sgemm: picks the vector width and runs the loop nest.</summary>
internal static unsafe class SgemmDriver
{
    /// <summary>Runs a validated problem (any sizes, including 0) with the widest accelerated vectors.</summary>
    public static void Run(in GemmProblem p)
    {
        if (Vector512.IsHardwareAccelerated)
            Run<V512, Vector512<float>>(p);
        else if (Vector256.IsHardwareAccelerated)
            Run<V256, Vector256<float>>(p);
        else
            Run<V128, Vector128<float>>(p);
    }

    /// <summary>Runs a validated problem with vectors <typeparamref name="TV"/> (tests run every width this way).</summary>
    public static void Run<TOps, TV>(in GemmProblem p) where TOps : struct, IVecOps<TV> where TV : struct
    {
        if (p.M == 0 || p.N == 0) return;
        if (p.K == 0 || p.Alpha == 0)
        {
            ScaleOnly(p);
            return;
        }
        // Threads only where each gets enough work to pay for the hand-off.
        long flops = 2L * p.M * p.N * p.K;
        int parallelism = (int)Math.Clamp(flops / GemmBlocking.MinFlopsPerThread, 1, p.Parallelism);
        if (p.M <= SgemmSmallM<TOps, TV>.MaxRows)
            SgemmSmallM<TOps, TV>.Run(p, parallelism);
        else
            SgemmJob<TOps, TV>.Run(p, parallelism);
    }

    /// <summary>
    /// The first k block's starting value of C[i, j]: <c>Beta·C</c> (C not read when Beta = 0) plus the
    /// bias. Shared by the vector prologue and the edge tiles so both round the same way.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Start(float c, float beta, float* bias, int j)
    {
        float x = beta == 0 ? 0f : beta == 1 ? c : beta * c;
        return bias != null ? x + bias[j] : x;
    }

    /// <summary>k = 0 or alpha = 0: <c>C = Beta·C + bias</c>; A and B are not read.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScaleOnly(in GemmProblem p)
    {
        for (int i = 0; i < p.M; i++)
        {
            float* c = p.C + i * p.Ldc;
            for (int j = 0; j < p.N; j++) c[j] = Start(c[j], p.Beta, p.Bias, j);
        }
    }
}

/// <summary>
/// One sgemm call for vector type <typeparamref name="TV"/>. Loop nest (row-major mirror of BLIS, where
/// the broadcast operand stays in L1 and the vector operand streams from L2):
/// <code>
/// for ic in M step MC                      shared A block, L3
///   for pc in K step KC
///     pack A[ic.., pc..] · alpha            all workers, MR-row strips
///     parallel for (column block, row group)
///       pack B[pc.., jc..]                  the worker's own B block, L2
///       for each A strip (MR rows)          L1
///         for each B panel (2W columns)     micro-kernel: C tile (+)= strip · panel
/// </code>
/// The first k block applies beta and the bias to each C tile just before the kernel accumulates
/// into it (or lets the kernel overwrite C when beta = 0 and there is no bias: C is then never read).
/// The blocking depends only on the problem, never on the thread count, so every thread count gives
/// bit-identical results.
/// </summary>
internal sealed unsafe class SgemmJob<TOps, TV> where TOps : struct, IVecOps<TV> where TV : struct
{
    private const int MR = GemmBlocking.MR;
    private static int NR => 2 * TOps.Count;

    private readonly GemmProblem _p;
    private readonly int _kcMax, _mcMax, _stripStride, _panels, _panelsPerBlock, _colBlocks, _parallelism;
    private readonly float* _aPack;

    // Current (ic, pc) iteration.
    private int _ic, _mc, _pc, _kc, _strips, _rowGroups, _stripsPerGroup;
    private bool _first;

    private SgemmJob(in GemmProblem p, int parallelism)
    {
        _p = p;
        int nr = NR;
        // Balanced k blocks (no thin tail block): e.g. K = 600 runs as 2 x 300, not 512 + 88.
        int kBlocks = CeilDiv(p.K, GemmBlocking.KC);
        _kcMax = CeilDiv(p.K, kBlocks);
        _stripStride = _kcMax * MR + Packing.StripSlack;
        _panels = CeilDiv(p.N, nr);

        _parallelism = parallelism;

        // Column blocks of at most NC columns, as many as a multiple of the thread count so they share
        // out evenly; never split below one panel.
        int maxPanels = Math.Max(1, GemmBlocking.NC / nr);
        int blocks = CeilDiv(_panels, maxPanels);
        blocks = Math.Min(_panels, CeilDiv(blocks, _parallelism) * _parallelism);
        _panelsPerBlock = CeilDiv(_panels, blocks);
        _colBlocks = CeilDiv(_panels, _panelsPerBlock);

        // Balanced A blocks of whole strips: e.g. M = 4000 runs as 2004 + 1996 rows, not 3072 + 928.
        _mcMax = RoundUp(CeilDiv(p.M, CeilDiv(p.M, GemmBlocking.MC)), MR);
        var buffers = GemmBuffers.Current;
        buffers.EnsureA((long)(_mcMax / MR) * _stripStride);
        _aPack = buffers.APack;
    }

    public static void Run(in GemmProblem p, int parallelism) => new SgemmJob<TOps, TV>(p, parallelism).Execute();

    private void Execute()
    {
        var options = _parallelism > 1 ? new ParallelOptions { MaxDegreeOfParallelism = _parallelism } : null;
        for (_ic = 0; _ic < _p.M; _ic += _mcMax)
        {
            _mc = Math.Min(_mcMax, _p.M - _ic);
            _strips = CeilDiv(_mc, MR);
            // Too few column blocks for the threads (narrow C): split the strips into row groups too.
            _rowGroups = _colBlocks >= _parallelism ? 1 : Math.Min(_strips, CeilDiv(_parallelism, _colBlocks));
            _stripsPerGroup = CeilDiv(_strips, _rowGroups);
            _rowGroups = CeilDiv(_strips, _stripsPerGroup);
            int units = _colBlocks * _rowGroups;
            for (_pc = 0; _pc < _p.K; _pc += _kc)
            {
                _kc = Math.Min(_kcMax, _p.K - _pc);
                _first = _pc == 0;
                if (options is null)
                {
                    PackA(0, _strips);
                    for (int u = 0; u < units; u++) ComputeUnit(u);
                }
                else
                {
                    int chunks = Math.Min(_parallelism, _strips);
                    Parallel.For(0, chunks, options, t => PackA(_strips * t / chunks, _strips * (t + 1) / chunks));
                    Parallel.For(0, units, options, ComputeUnit);
                }
            }
        }
    }

    /// <summary>Packs strips <c>[s0, s1)</c> of the current A block (alpha folded in).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void PackA(int s0, int s1)
    {
        for (int s = s0; s < s1; s++)
        {
            int i = _ic + s * MR;
            Packing.PackAStrip(_p.AAt(i, _pc), _p.Lda, _p.TransA, Math.Min(MR, _p.M - i), _kc, _p.Alpha, _aPack + (nint)s * _stripStride);
        }
    }

    /// <summary>One (column block, row group): packs its B block, then runs every strip against every panel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ComputeUnit(int unit)
    {
        int nr = NR, kc = _kc;
        int cb = unit % _colBlocks, rg = unit / _colBlocks;
        int firstPanel = cb * _panelsPerBlock;
        int panels = Math.Min(_panelsPerBlock, _panels - firstPanel);
        int j0 = firstPanel * nr;

        var buffers = GemmBuffers.Current;
        buffers.EnsureB((long)_kcMax * _panelsPerBlock * nr);
        buffers.EnsureTile(MR * nr);
        float* bPack = buffers.BPack, tile = buffers.Tile;
        nint panelStride = (nint)kc * nr;
        Packing.PackB<TOps, TV>(_p.BAt(_pc, j0), _p.Ldb, _p.TransB, kc, Math.Min(panels * nr, _p.N - j0), bPack, panelStride);

        int s0 = rg * _stripsPerGroup, s1 = Math.Min(_strips, s0 + _stripsPerGroup);
        nint ldc = _p.Ldc;
        for (int s = s0; s < s1; s++)
        {
            int i = _ic + s * MR;
            int rows = Math.Min(MR, _p.M - i);
            float* aStrip = _aPack + (nint)s * _stripStride;
            float* cRow = _p.C + i * ldc;
            for (int q = 0; q < panels; q++)
            {
                int j = j0 + q * nr;
                float* c = cRow + j;
                // The next tile's C rows, ahead of the kernel's final loads (C is L3/DRAM-resident).
                if (q + 1 < panels) Prefetch(c + nr, ldc, rows, nr);
                Tile(rows, aStrip, bPack + q * panelStride, kc, c, j, Math.Min(nr, _p.N - j), tile);
            }
        }
    }

    /// <summary>C tile <c>[rows, cols]</c> at column <paramref name="j"/> (+)= strip · panel, with the first k block's beta and bias.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Tile(int rows, float* a, float* b, int kc, float* c, int j, int cols, float* tile)
    {
        int nr = NR;
        nint ldc = _p.Ldc;
        float beta = _p.Beta;
        float* bias = _p.Bias;
        bool overwrite = _first && beta == 0 && bias == null;
        if (cols == nr)
        {
            if (_first && !overwrite && !(beta == 1 && bias == null))
            {
                Prologue(rows, c, ldc, beta, bias == null ? null : bias + j);
            }
            MicroKernel<TOps, TV>.Gemm(rows, a, 1, MR, b, nr, c, ldc, kc, accumulate: !overwrite);
            return;
        }

        // Partial panel (last columns of C): the kernel writes a full-width scratch tile.
        MicroKernel<TOps, TV>.Gemm(rows, a, 1, MR, b, nr, tile, nr, kc, accumulate: false);
        for (int r = 0; r < rows; r++)
        {
            float* t = tile + r * nr;
            float* cr = c + r * ldc;
            if (overwrite)
            {
                for (int x = 0; x < cols; x++) cr[x] = t[x];
            }
            else if (_first)
            {
                for (int x = 0; x < cols; x++) cr[x] = t[x] + SgemmDriver.Start(cr[x], beta, bias, j + x);
            }
            else
            {
                for (int x = 0; x < cols; x++) cr[x] = t[x] + cr[x];
            }
        }
    }

    /// <summary>C tile <c>[rows, 2W]</c> = beta·C + bias (C not read when beta = 0), vectorised <see cref="SgemmDriver.Start"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prologue(int rows, float* c, nint ldc, float beta, float* bias)
    {
        int w = TOps.Count;
        TV b0 = bias != null ? TOps.Load(bias) : TOps.Zero, b1 = bias != null ? TOps.Load(bias + w) : TOps.Zero;
        TV vb = TOps.Broadcast(beta);
        for (int r = 0; r < rows; r++)
        {
            float* cr = c + r * ldc;
            TV x0, x1;
            if (beta == 0) { x0 = TOps.Zero; x1 = TOps.Zero; }
            else if (beta == 1) { x0 = TOps.Load(cr); x1 = TOps.Load(cr + w); }
            else { x0 = TOps.Mul(vb, TOps.Load(cr)); x1 = TOps.Mul(vb, TOps.Load(cr + w)); }
            if (bias != null) { x0 = TOps.Add(x0, b0); x1 = TOps.Add(x1, b1); }
            TOps.Store(cr, x0);
            TOps.Store(cr + w, x1);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(float* c, nint ldc, int rows, int nr)
    {
        if (!Sse.IsSupported) return;
        for (int r = 0; r < rows; r++)
        {
            for (int x = 0; x < nr; x += 16) Sse.Prefetch0(c + r * ldc + x);
        }
    }

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;

    private static int RoundUp(int a, int b) => CeilDiv(a, b) * b;
}
