// Flash-style attention forward on the CPU: query-column tiles x key tiles, online softmax, fp32.
using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttention.Cpu.Engine;

/// <summary>Validated parameters of one forward call.</summary>
internal readonly record struct FlashArgs(AttentionShape Shape, float Scale, AttentionMask Mask, int Parallelism);

/// <summary>
/// The CPU flash-attention forward.
/// <para>
/// Work is computed transposed: a work item is one (batch, KV head) and a tile of M "query columns",
/// where a column is a (query row, query head of the GQA group) pair, so heads that share a KV head
/// share every K/V load (decode with GQA fills the tile with heads). Per key tile of N keys:
/// <c>Sᵀ[N, M] = K[N, D]·Qᵀ[D, M]</c>, scale, mask, online softmax with the running max / sum held as
/// vectors over the columns, then <c>Oᵀ[D, M] += Vᵀ[D, N]·Pᵀ[N, M]</c>. Both products use the one
/// micro-kernel reading K and V in place, so nothing of size Sq x Sk exists unless probabilities are
/// requested. Key tiles outside the causal / window range and block-sparse blocks that no column keeps
/// are never visited.
/// </para>
/// </summary>
internal static unsafe class FlashEngine
{
    /// <summary>Keys per tile (N): large enough to amortise the softmax rescale, small enough for L1/L2.</summary>
    public const int KeyTileSize = 128;

    public static void Run<T>(FlashArgs args, ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v,
        TensorSpan<T> o, TensorSpan<float> lse, bool wantLse, TensorSpan<float> probs, bool wantProbs) where T : unmanaged
    {
        if (Vector512.IsHardwareAccelerated)
            Run<T, V512, Vector512<float>>(args, q, k, v, o, lse, wantLse, probs, wantProbs);
        else if (Vector256.IsHardwareAccelerated)
            Run<T, V256, Vector256<float>>(args, q, k, v, o, lse, wantLse, probs, wantProbs);
        else
            Run<T, V128, Vector128<float>>(args, q, k, v, o, lse, wantLse, probs, wantProbs);
    }

    private static void Run<T, TOps, TV>(FlashArgs args, ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v,
        TensorSpan<T> o, TensorSpan<float> lse, bool wantLse, TensorSpan<float> probs, bool wantProbs)
        where T : unmanaged where TOps : struct, IVecOps<TV> where TV : struct
    {
        var s = args.Shape;
        float[]? kBuffer = null, vBuffer = null;
        try
        {
            fixed (T* qp = &Elements.First(q), kp = &Elements.First(k), vp = &Elements.First(v), op = &Elements.First(o))
            fixed (float* lp = &Elements.First(lse), pp = &Elements.First(probs))
            {
                int elements = checked(s.Batch * s.KeyLength * s.KvHeads * s.HeadDim);
                kBuffer = ArrayPool<float>.Shared.Rent(elements);
                vBuffer = ArrayPool<float>.Shared.Rent(elements);
                fixed (float* kb = kBuffer, vb = vBuffer)
                {
                    var job = new FlashJob<T, TOps, TV>
                    {
                        Args = args,
                        Q = View<T>.Of(qp, q.Strides),
                        O = View<T>.Of(op, o.Strides),
                        Lse = wantLse ? View<float>.Of(lp, lse.Strides) : default,
                        Probs = wantProbs ? View<float>.Of(pp, probs.Strides) : default,
                        K = Repack(View<T>.Of(kp, k.Strides), s, kb, args.Parallelism),
                        V = Repack(View<T>.Of(vp, v.Strides), s, vb, args.Parallelism),
                    };
                    job.Execute();
                }
            }
        }
        finally
        {
            if (kBuffer is not null) ArrayPool<float>.Shared.Return(kBuffer);
            if (vBuffer is not null) ArrayPool<float>.Shared.Return(vBuffer);
        }
    }

    /// <summary>
    /// Copies K or V once per call into a pooled fp32 buffer <c>[B, Hkv, Sk, D]</c>, so the micro-kernel
    /// streams contiguous rows of one head (in BSHD the rows of a head are H·D apart, which on 4 KiB
    /// multiples thrashes L1 sets: measured 2.3x slower). Returned as a view indexed (b, j, kvh).
    /// </summary>
    private static View<float> Repack<T>(View<T> from, AttentionShape s, float* dst, int parallelism) where T : unmanaged
    {
        int sk = s.KeyLength, d = s.HeadDim;
        nint perHead = (nint)sk * d;
        var to = new View<float>(dst, perHead * s.KvHeads, d, perHead, 1);
        const int chunk = 256;
        int chunks = (sk + chunk - 1) / chunk;
        Parallel.For(0, s.Batch * s.KvHeads * chunks, new ParallelOptions { MaxDegreeOfParallelism = parallelism },
            [MethodImpl(MethodImplOptions.AggressiveOptimization)] (item) =>
        {
            int c = item % chunks, h = item / chunks % s.KvHeads, b = item / chunks / s.KvHeads;
            for (int j = c * chunk, end = Math.Min(sk, j + chunk); j < end; j++)
            {
                Elements.Read(from.At(b, j, h), from.S3, d, to.At(b, j, h));
            }
        });
        return to;
    }
}

/// <summary>One forward call's state, shared read-only by the worker threads.</summary>
internal sealed unsafe class FlashJob<T, TOps, TV>
    where T : unmanaged where TOps : struct, IVecOps<TV> where TV : struct
{
    public FlashArgs Args;
    public View<T> Q, O;
    public View<float> K, V, Lse, Probs;
    private int _next;

    private const float Log2E = 1.44269504088896341f;
    private const float Ln2 = 0.693147180559945309f;

    /// <summary>Multiplier folded into Q when packing: the sign of the scale (0 for a zero scale).</summary>
    private float QuerySign => Args.Scale > 0 ? 1f : Args.Scale < 0 ? -1f : 0f;

    /// <summary>
    /// Positive factor from raw score differences to base-2 logits: |scale|·log2(e) (1 for a zero
    /// scale, whose scores are all 0). Differences are taken before scaling, <c>(S - max)·factor</c>,
    /// so logits near 1e4 keep their fp32 precision.
    /// </summary>
    private float Factor => Args.Scale == 0 ? 1f : MathF.Abs(Args.Scale) * Log2E;

    private static int M => 2 * TOps.Count;

    public void Execute()
    {
        var s = Args.Shape;
        int groups = s.Batch * s.KvHeads;
        int tilesPerGroup = (int)(((long)s.QueryLength * s.GroupSize + M - 1) / M);
        long total = (long)groups * tilesPerGroup;
        int workers = (int)Math.Min(Args.Parallelism, total);
        _next = 0;
        if (workers <= 1)
        {
            Work(groups, tilesPerGroup, total);
            return;
        }
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, _ => Work(groups, tilesPerGroup, total));
    }

    /// <summary>Pulls work items until none are left; later query tiles first (they see the most keys under causal masks).</summary>
    private void Work(int groups, int tilesPerGroup, long total)
    {
        var s = Args.Shape;
        var scratch = Scratch.Current;
        int keyBlocks = Args.Mask.BlockMask?.KeyBlocks ?? 0;
        scratch.Ensure(s.HeadDim, M, FlashEngine.KeyTileSize, 0, keyBlocks,
            s.KeyLength / FlashEngine.KeyTileSize + keyBlocks + 2);
        long item;
        while ((item = Interlocked.Increment(ref _next) - 1) < total)
        {
            int tile = tilesPerGroup - 1 - (int)(item / groups);
            int group = (int)(item % groups);
            ProcessTile(scratch, group / s.KvHeads, group % s.KvHeads, tile);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ProcessTile(Scratch sc, int b, int kvh, int tile)
    {
        var s = Args.Shape;
        int m = M, w = TOps.Count, d = s.HeadDim, g = s.GroupSize;
        var rules = new RowRules(Args.Mask, s, b);
        long p0 = (long)tile * m;
        int cols = (int)Math.Min(m, (long)s.QueryLength * g - p0);
        int[] colRow = sc.Cols;                 // [0, M): query row of each column; [M, 2M): query head
        int active = 0;
        for (int c = 0; c < cols; c++)
        {
            long p = p0 + c;
            colRow[c] = (int)(p / g);
            colRow[m + c] = kvh * g + (int)(p % g);
            if (colRow[c] < rules.QueryLength) active = c + 1;
        }

        float* vec = sc.Vec;
        float* mRun = vec, lRun = vec + m, lo = vec + 2 * m, hi = vec + 3 * m, blockBias = vec + 4 * m, lseOut = vec + 5 * m;
        int tileCount = active == 0 ? 0 : PlanKeyTiles(sc, rules, colRow, active);

        if (tileCount > 0)
        {
            PackQueries(sc.Qt, b, colRow, cols);
            for (int c = 0; c < m; c++)
            {
                bool on = c < active;
                lo[c] = on ? rules.Lo(colRow[c]) : float.PositiveInfinity;
                hi[c] = on ? rules.Hi(colRow[c]) : float.NegativeInfinity;
                mRun[c] = float.NegativeInfinity;
                lRun[c] = 0;
            }
            new Span<float>(sc.Ot, d * m).Clear();
            for (int t = 0; t < tileCount; t++)
            {
                KeyTile kt = sc.Tiles[t];
                Scores(sc, b, kvh, kt, colRow, active, lo, hi, blockBias);
                OnlineSoftmax(sc.St, kt.End - kt.Start, Factor, sc.Ot, d, mRun, lRun);
                float* vTile = V.At(b, kt.Start, kvh);
                MicroKernel<TOps, TV>.Gemm(d, vTile, V.S3, V.S1, sc.St, m, sc.Ot, m, kt.End - kt.Start, accumulate: true);
            }
        }

        // Finalise: O = Oᵀ / l, LSE = m + log(l); rows that saw nothing (or are padding) get 0 and -inf.
        float* row = sc.Row;
        for (int c = 0; c < cols; c++)
        {
            int i = colRow[c], h = colRow[m + c];
            bool seen = c < active && tileCount > 0 && lRun[c] > 0;
            T* dst = O.At(b, i, h);
            if (seen)
            {
                for (int x = 0; x < d; x++) row[x] = sc.Ot[x * m + c];
                Elements.Write(row, 1f / lRun[c], d, dst, O.S3);
                lseOut[c] = (mRun[c] * Factor + MathF.Log2(lRun[c])) * Ln2;
            }
            else
            {
                Elements.Zero(dst, O.S3, d);
                lseOut[c] = float.NegativeInfinity;
            }
            if (Lse.Base != null) *Lse.At(b, h, i) = lseOut[c];
        }
        if (Probs.Base != null)
        {
            WriteProbabilities(sc, b, kvh, tileCount, colRow, cols, active, lo, hi, blockBias, mRun, lRun);
        }
    }

    /// <summary>Qᵀ[D, M]: column c holds query row colRow[c] of head colRow[M + c] times the scale's sign; unused columns are 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void PackQueries(float* qt, int b, int[] colRow, int cols)
    {
        int m = M, d = Args.Shape.HeadDim;
        float sign = QuerySign;
        float* row = Scratch.Current.Row;
        for (int c = 0; c < m; c++)
        {
            if (c < cols)
            {
                Elements.Read(Q.At(b, colRow[c], colRow[m + c]), Q.S3, d, row);
                for (int x = 0; x < d; x++) qt[x * m + c] = row[x] * sign;
            }
            else
            {
                for (int x = 0; x < d; x++) qt[x * m + c] = 0;
            }
        }
    }

    /// <summary>
    /// Lists the key tiles the active columns need: the union of their visible ranges, cut at kept
    /// block-sparse segments; marks tiles that need element-wise masking. Returns the tile count.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private int PlanKeyTiles(Scratch sc, RowRules rules, int[] colRow, int active)
    {
        int first = colRow[0], last = colRow[active - 1];
        int jStart = rules.Lo(first), jEnd = rules.Hi(last) + 1;
        if (jStart >= jEnd) return 0;
        int fullLo = rules.Lo(last), fullHi = rules.Hi(first);   // every active column sees [fullLo, fullHi]
        KeyTile[] tiles = sc.Tiles;
        int n = 0, size = FlashEngine.KeyTileSize;
        var bm = Args.Mask.BlockMask;
        if (bm is null)
        {
            for (int j0 = jStart; j0 < jEnd; j0 += size)
            {
                int j1 = Math.Min(j0 + size, jEnd);
                tiles[n++] = new KeyTile(j0, j1, !(fullLo <= j0 && fullHi >= j1 - 1), false);
            }
            return n;
        }

        int bk = bm.BlockSizeK, kbFirst = jStart / bk, kbLast = (jEnd - 1) / bk, nkb = kbLast - kbFirst + 1;
        Span<bool> any = sc.Flags.AsSpan(0, nkb), all = sc.Flags.AsSpan(nkb, nkb);
        any.Clear();
        all.Fill(true);
        int m = M, prevH = -1, prevQb = -1;
        for (int c = 0; c < active; c++)
        {
            int h = colRow[m + c], qb = colRow[c] / bm.BlockSizeQ;
            if (h == prevH && qb == prevQb) continue;
            (prevH, prevQb) = (h, qb);
            var keep = bm.Row(h, qb).Slice(kbFirst, nkb);
            for (int x = 0; x < nkb; x++)
            {
                any[x] |= keep[x];
                all[x] &= keep[x];
            }
        }
        for (int x = 0; x < nkb;)
        {
            if (!any[x]) { x++; continue; }
            int y = x;
            while (y < nkb && any[y]) y++;
            int segStart = Math.Max(jStart, (kbFirst + x) * bk), segEnd = Math.Min(jEnd, (kbFirst + y) * bk);
            for (int j0 = segStart; j0 < segEnd; j0 += size)
            {
                int j1 = Math.Min(j0 + size, segEnd);
                bool partial = false;
                for (int kb = j0 / bk; kb <= (j1 - 1) / bk; kb++) partial |= !all[kb - kbFirst];
                tiles[n++] = new KeyTile(j0, j1, !(fullLo <= j0 && fullHi >= j1 - 1), partial);
            }
            x = y;
        }
        return n;
    }

    /// <summary>
    /// Sᵀ[N, M] = K[tile]·(±Qᵀ) (raw, unscaled scores), with -inf where a column may not see a key.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Scores(Scratch sc, int b, int kvh, KeyTile kt, int[] colRow, int active, float* lo, float* hi, float* blockBias)
    {
        int m = M, w = TOps.Count, nt = kt.End - kt.Start;
        float* st = sc.St;
        MicroKernel<TOps, TV>.Gemm(nt, K.At(b, kt.Start, kvh), K.S1, K.S3, sc.Qt, m, st, m, Args.Shape.HeadDim, accumulate: false);
        if (!kt.RangeMask && !kt.BlockMask)
        {
            return;
        }
        TV lo0 = TOps.Load(lo), lo1 = TOps.Load(lo + w), hi0 = TOps.Load(hi), hi1 = TOps.Load(hi + w);
        TV bias0 = TOps.Zero, bias1 = TOps.Zero;
        var bm = Args.Mask.BlockMask;
        int currentBlock = -1;
        for (int j = 0; j < nt; j++)
        {
            float* r = st + j * m;
            TV s0 = TOps.Load(r), s1 = TOps.Load(r + w);
            if (kt.RangeMask)
            {
                TV key = TOps.Broadcast(kt.Start + j);
                s0 = TOps.KeepInRange(s0, key, lo0, hi0);
                s1 = TOps.KeepInRange(s1, key, lo1, hi1);
            }
            if (kt.BlockMask)
            {
                int kb = (kt.Start + j) / bm!.BlockSizeK;
                if (kb != currentBlock)
                {
                    currentBlock = kb;
                    for (int c = 0; c < m; c++)
                    {
                        blockBias[c] = c < active && bm.Row(colRow[m + c], colRow[c] / bm.BlockSizeQ)[kb] ? 0f : float.NegativeInfinity;
                    }
                    bias0 = TOps.Load(blockBias);
                    bias1 = TOps.Load(blockBias + w);
                }
                s0 = TOps.Add(s0, bias0);
                s1 = TOps.Add(s1, bias1);
            }
            TOps.Store(r, s0);
            TOps.Store(r + w, s1);
        }
    }

    /// <summary>
    /// Online softmax in base 2 over one raw Sᵀ tile (logit = <paramref name="factor"/>·S, factor &gt; 0).
    /// The running max is kept in raw score units; P = 2^((S - max)·factor). Updates the running max /
    /// sum per column, turns Sᵀ into Pᵀ and rescales the Oᵀ accumulator when a column's max moved.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void OnlineSoftmax(float* st, int nt, float factor, float* ot, int d, float* mRun, float* lRun)
    {
        int m = M, w = TOps.Count;
        TV old0 = TOps.Load(mRun), old1 = TOps.Load(mRun + w);
        TV max0 = old0, max1 = old1;
        for (int j = 0; j < nt; j++)
        {
            max0 = TOps.Max(max0, TOps.Load(st + j * m));
            max1 = TOps.Max(max1, TOps.Load(st + j * m + w));
        }
        TV f = TOps.Broadcast(factor);
        // A column that has seen only masked keys keeps max = -inf; use 0 so 2^(-inf) = 0, not NaN.
        TV use0 = TOps.NegInfToZero(max0), use1 = TOps.NegInfToZero(max1);
        TV alpha0 = TOps.Exp2(TOps.Mul(TOps.Sub(old0, use0), f)), alpha1 = TOps.Exp2(TOps.Mul(TOps.Sub(old1, use1), f));
        TV sum0 = TOps.Zero, sum1 = TOps.Zero;
        for (int j = 0; j < nt; j++)
        {
            float* r = st + j * m;
            TV p0 = TOps.Exp2(TOps.Mul(TOps.Sub(TOps.Load(r), use0), f));
            TV p1 = TOps.Exp2(TOps.Mul(TOps.Sub(TOps.Load(r + w), use1), f));
            TOps.Store(r, p0);
            TOps.Store(r + w, p1);
            sum0 = TOps.Add(sum0, p0);
            sum1 = TOps.Add(sum1, p1);
        }
        TOps.Store(lRun, TOps.Fma(TOps.Load(lRun), alpha0, sum0));
        TOps.Store(lRun + w, TOps.Fma(TOps.Load(lRun + w), alpha1, sum1));
        TOps.Store(mRun, max0);
        TOps.Store(mRun + w, max1);
        TV one = TOps.Broadcast(1f);
        if (!(TOps.AllEqual(alpha0, one) && TOps.AllEqual(alpha1, one)))
        {
            for (int x = 0; x < d; x++)
            {
                float* r = ot + x * m;
                TOps.Store(r, TOps.Mul(TOps.Load(r), alpha0));
                TOps.Store(r + w, TOps.Mul(TOps.Load(r + w), alpha1));
            }
        }
    }

    /// <summary>
    /// Second pass when probabilities are requested: P = 2^((S - max)·factor) / sum with the final max
    /// and sum of the first pass (not exp(logit - LSE): an fp32 LSE near 1e4 alone is off by ~5e-4), 0
    /// where masked.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void WriteProbabilities(Scratch sc, int b, int kvh, int tileCount, int[] colRow, int cols, int active,
        float* lo, float* hi, float* blockBias, float* mRun, float* lRun)
    {
        int m = M, sk = Args.Shape.KeyLength;
        for (int c = 0; c < cols; c++)
        {
            Elements.Zero(Probs.At(b, colRow[m + c], colRow[c]), Probs.S3, sk);
        }
        for (int t = 0; t < tileCount; t++)
        {
            KeyTile kt = sc.Tiles[t];
            Scores(sc, b, kvh, kt, colRow, active, lo, hi, blockBias);
            for (int c = 0; c < active; c++)
            {
                if (!(lRun[c] > 0)) continue;
                float* dst = Probs.At(b, colRow[m + c], colRow[c]);
                float max = mRun[c], inv = 1f / lRun[c], factor = Factor;
                for (int j = kt.Start; j < kt.End; j++)
                {
                    dst[j * Probs.S3] = MathF.Pow(2f, (sc.St[(j - kt.Start) * m + c] - max) * factor) * inv;
                }
            }
        }
    }
}
