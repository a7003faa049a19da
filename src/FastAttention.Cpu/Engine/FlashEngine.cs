// Flash-style attention forward on the CPU: query-column tiles x key tiles, online softmax, fp32.
using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttention.Cpu.Engine;

/// <summary>Validated parameters of one forward call.</summary>
internal readonly record struct FlashArgs(AttentionShape Shape, float Scale, AttentionMask Mask, int Parallelism, VectorWidth Width = VectorWidth.Auto);

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
        switch (Widths.Resolve(args.Width))
        {
            case VectorWidth.V512: Run<T, V512, Vector512<float>>(args, q, k, v, o, lse, wantLse, probs, wantProbs); break;
            case VectorWidth.V256: Run<T, V256, Vector256<float>>(args, q, k, v, o, lse, wantLse, probs, wantProbs); break;
            default: Run<T, V128, Vector128<float>>(args, q, k, v, o, lse, wantLse, probs, wantProbs); break;
        }
    }

    private static void Run<T, TOps, TV>(FlashArgs args, ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v,
        TensorSpan<T> o, TensorSpan<float> lse, bool wantLse, TensorSpan<float> probs, bool wantProbs)
        where T : unmanaged where TOps : struct, IVecOps<TV> where TV : struct
    {
        var s = args.Shape;
        int m = 2 * TOps.Count;
        bool kInPlace = ReadInPlace<T>(k.Strides, s, m), vInPlace = ReadInPlace<T>(v.Strides, s, m);
        int elements = checked(s.Batch * s.KeyLength * s.KvHeads * s.HeadDim);
        float[]? kBuffer = kInPlace ? null : ArrayPool<float>.Shared.Rent(elements + 16);
        float[]? vBuffer = vInPlace ? null : ArrayPool<float>.Shared.Rent(elements + 16);
        KvPacker<T>? packer = null;
        try
        {
            fixed (T* qp = &Elements.First(q), kp = &Elements.First(k), vp = &Elements.First(v), op = &Elements.First(o))
            fixed (float* lp = &Elements.First(lse), pp = &Elements.First(probs), kb = kBuffer, vb = vBuffer)
            {
                View<T> kFrom = View<T>.Of(kp, k.Strides), vFrom = View<T>.Of(vp, v.Strides);
                View<float> kPacked = kInPlace ? default : Packed(kb, s), vPacked = vInPlace ? default : Packed(vb, s);
                if (!(kInPlace && vInPlace)) packer = new KvPacker<T>(kFrom, kPacked, vFrom, vPacked, s, TOps.Count);
                var job = new FlashJob<T, TOps, TV>
                {
                    Args = args,
                    Q = View<T>.Of(qp, q.Strides),
                    O = View<T>.Of(op, o.Strides),
                    Lse = wantLse ? View<float>.Of(lp, lse.Strides) : default,
                    Probs = wantProbs ? View<float>.Of(pp, probs.Strides) : default,
                    K = kInPlace ? View<float>.Of((float*)kp, k.Strides) : kPacked,
                    V = vInPlace ? View<float>.Of((float*)vp, v.Strides) : vPacked,
                    Packer = packer,
                };
                job.Execute();
            }
        }
        finally
        {
            packer?.Dispose();
            if (kBuffer is not null) ArrayPool<float>.Shared.Return(kBuffer);
            if (vBuffer is not null) ArrayPool<float>.Shared.Return(vBuffer);
        }
    }

    /// <summary>
    /// fp32 K/V with a unit head-dim stride are read in place when a head's rows are already contiguous
    /// (row stride D, e.g. a <c>[B, H, S, D]</c> view or a single KV head: the copy would have the same
    /// layout), or when each KV head has a single query tile (decode-like calls: every K/V row is read
    /// once, so a copy would only double the traffic).
    /// </summary>
    private static bool ReadInPlace<T>(ReadOnlySpan<nint> strides, AttentionShape s, int tileColumns) =>
        typeof(T) == typeof(float) && strides[3] == 1 &&
        (strides[1] == s.HeadDim || (long)s.QueryLength * s.GroupSize <= tileColumns);

    /// <summary>
    /// The pooled fp32 buffer <c>[B, Hkv, Sk, D]</c> that K or V is copied into by <see cref="KvPacker{T}"/>, so
    /// the micro-kernel streams contiguous rows of one head (in BSHD the rows of a head are H·D apart, which
    /// on 4 KiB multiples thrashes L1 sets: measured 2.3x slower). Returned as a view indexed (b, j, kvh).
    /// </summary>
    private static View<float> Packed(float* dst, AttentionShape s)
    {
        dst = (float*)(((nint)dst + 63) & ~(nint)63);   // cache-line aligned rows for the non-temporal stores (16 floats rented extra)
        nint perHead = (nint)s.KeyLength * s.HeadDim;
        return new View<float>(dst, perHead * s.KvHeads, s.HeadDim, perHead, 1);
    }
}

/// <summary>One forward call's state, shared read-only by the worker threads.</summary>
internal sealed unsafe class FlashJob<T, TOps, TV>
    where T : unmanaged where TOps : struct, IVecOps<TV> where TV : struct
{
    public FlashArgs Args;
    public View<T> Q, O;
    public View<float> K, V, Lse, Probs;
    /// <summary>Copies K / V tiles into <see cref="K"/> / <see cref="V"/> on first use; null when both are read in place.</summary>
    public KvPacker<T>? Packer;
    private long _next;

    /// <summary>See <see cref="LogitScale.Factor"/>.</summary>
    private float Factor => LogitScale.Factor(Args.Scale);

    private static int M => 2 * TOps.Count;

    /// <summary>Query-column tiles processed together per work item (they share K/V tiles while hot in L2).</summary>
    private int _parts;

    public void Execute()
    {
        var s = Args.Shape;
        int groups = s.Batch * s.KvHeads;
        long columns = (long)s.QueryLength * s.GroupSize;
        // Up to 4 tiles per item (measured: K/V of a long sequence then come from L2, not L3), fewer
        // when that would leave too few items to balance across the threads.
        _parts = MaxParts;
        while (_parts > 1 && groups * CeilDiv(columns, _parts * M) < 4L * Args.Parallelism) _parts /= 2;
        int itemsPerGroup = (int)CeilDiv(columns, _parts * M);
        long total = (long)groups * itemsPerGroup;
        int workers = (int)Math.Min(Args.Parallelism, total);
        _next = 0;
        if (workers <= 1)
        {
            Work(itemsPerGroup, total, 1);
            return;
        }
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, _ => Work(itemsPerGroup, total, workers));
    }

    private const int MaxParts = 4;

    private static long CeilDiv(long a, long b) => (a + b - 1) / b;

    /// <summary>
    /// Pulls runs of consecutive work items until none are left: one (batch, KV head) group after
    /// another, so threads share that group's K/V in cache, and within a group the later query tiles
    /// first (they see the most keys under causal masks, so the small ones fill the tail). A run is
    /// about 1/(2·workers) of what is left (guided scheduling), never crossing a group: under local /
    /// windowed masks neighbouring query tiles share most of their K/V tiles, which then stay in one
    /// core's L2 (measured 3-6% on 10%-dense block-sparse calls), and the tail still balances item by item.
    /// </summary>
    private void Work(int itemsPerGroup, long total, int workers)
    {
        var s = Args.Shape;
        var scratch = Scratch.Current;
        int keyBlocks = Args.Mask.BlockMask?.KeyBlocks ?? 0;
        scratch.Ensure(s.HeadDim, M, FlashEngine.KeyTileSize, 0, keyBlocks, MaxTiles, _parts);
        while (true)
        {
            long start = Volatile.Read(ref _next);
            if (start >= total) return;
            long groupEnd = (start / itemsPerGroup + 1) * itemsPerGroup;
            long count = Math.Min(groupEnd - start, Math.Max(1, (total - start) / (2 * workers)));
            if (Interlocked.CompareExchange(ref _next, start + count, start) != start) continue;
            int group = (int)(start / itemsPerGroup);
            for (long item = start; item < start + count; item++)
            {
                int index = itemsPerGroup - 1 - (int)(item % itemsPerGroup);
                ProcessItem(scratch, group / s.KvHeads, group % s.KvHeads, index);
            }
        }
    }

    /// <summary>Upper bound on the key tiles of one query tile: grid cells plus one extra cut per block segment.</summary>
    private int MaxTiles => 2 * (Args.Shape.KeyLength / FlashEngine.KeyTileSize + (Args.Mask.BlockMask?.KeyBlocks ?? 0) + 2);

    /// <summary>One query-column tile of a work item and its slices of the thread's scratch.</summary>
    private struct Part
    {
        public int Cols, Active, TileCount, Next;
        public int* Row, Head;                     // [M] query row and query head of each column
        public float* Qt, Ot;                      // [D, M]
        public float* MRun, LRun, Lo, Hi, Bias;    // [M] each
        public KeyTile* Tiles;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ProcessItem(Scratch sc, int b, int kvh, int index)
    {
        var s = Args.Shape;
        int m = M, d = s.HeadDim, g = s.GroupSize, maxTiles = MaxTiles;
        var rules = new RowRules(Args.Mask, s, b);
        long columns = (long)s.QueryLength * g;
        Span<Part> parts = stackalloc Part[_parts];
        int count = 0;
        for (int t = 0; t < _parts; t++)
        {
            long p0 = ((long)index * _parts + t) * m;
            if (p0 >= columns) break;
            ref Part part = ref parts[count++];
            part.Row = sc.Cols + 2 * m * t;
            part.Head = part.Row + m;
            part.Qt = sc.Qt + (nint)d * m * t;
            part.Ot = sc.Ot + (nint)d * m * t;
            float* vec = sc.Vec + 8 * m * t;
            part.MRun = vec;
            part.LRun = vec + m;
            part.Lo = vec + 2 * m;
            part.Hi = vec + 3 * m;
            part.Bias = vec + 4 * m;
            part.Tiles = sc.Tiles + maxTiles * t;
            part.Cols = (int)Math.Min(m, columns - p0);
            part.Active = 0;
            for (int c = 0; c < part.Cols; c++)
            {
                long p = p0 + c;
                part.Row[c] = (int)(p / g);
                part.Head[c] = kvh * g + (int)(p % g);
                if (part.Row[c] < rules.QueryLength) part.Active = c + 1;
            }
            part.TileCount = part.Active == 0 ? 0 : PlanKeyTiles(sc, rules, ref part);
            part.Next = 0;
            if (part.TileCount > 0)
            {
                PackQueries(ref part, b);
                for (int c = 0; c < m; c++)
                {
                    bool on = c < part.Active;
                    part.Lo[c] = on ? rules.Lo(part.Row[c]) : float.PositiveInfinity;
                    part.Hi[c] = on ? rules.Hi(part.Row[c]) : float.NegativeInfinity;
                    part.MRun[c] = float.NegativeInfinity;
                    part.LRun[c] = 0;
                }
                new Span<float>(part.Ot, d * m).Clear();
            }
        }
        parts = parts[..count];

        // Walk the key axis one grid cell (KeyTileSize keys) at a time; every part consumes its tiles
        // in that cell, so a K/V tile is loaded once from memory and reused from cache by all parts.
        while (true)
        {
            int cell = int.MaxValue;
            foreach (ref Part part in parts)
            {
                if (part.Next < part.TileCount) cell = Math.Min(cell, part.Tiles[part.Next].Start / FlashEngine.KeyTileSize);
            }
            if (cell == int.MaxValue) break;
            foreach (ref Part part in parts)
            {
                for (; part.Next < part.TileCount && part.Tiles[part.Next].Start / FlashEngine.KeyTileSize == cell; part.Next++)
                {
                    KeyTile kt = part.Tiles[part.Next];
                    Packer?.Ensure(b, kvh, kt.Start, kt.End);
                    Scores(sc, b, kvh, kt, ref part);
                    OnlineSoftmax(sc.St, kt.End - kt.Start, Factor, part.Ot, d, part.MRun, part.LRun);
                    MicroKernel<TOps, TV>.Gemm(d, V.At(b, kt.Start, kvh), V.S3, V.S1, sc.St, m, part.Ot, m, kt.End - kt.Start, accumulate: true);
                }
            }
        }

        foreach (ref Part part in parts)
        {
            Finish(b, ref part);
            if (Probs.Base != null)
            {
                WriteProbabilities(sc, b, kvh, ref part);
            }
        }
    }

    /// <summary>O = Oᵀ / l and LSE = m + log(l) per column; rows that saw nothing (or are padding) get 0 and -inf.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Finish(int b, ref Part part)
    {
        int m = M, d = Args.Shape.HeadDim;
        if (O.S3 == 1)
        {
            for (int c = 0; c < part.Cols; c++) Elements.Prefetch(O.At(b, part.Row[c], part.Head[c]), d * sizeof(T));
        }
        int written = 0;   // columns [0, written) already hold their output rows
        if (typeof(T) == typeof(float) && O.S3 == 1 && d % 16 == 0 && Transpose.Supported && part.TileCount > 0)
        {
            // 16 columns of Oᵀ at a time through a 16x16 block transpose, while all 16 saw a key.
            float** src = stackalloc float*[16];
            float** dst = stackalloc float*[16];
            float* factors = stackalloc float[16];
            for (; written + 16 <= Math.Min(part.Cols, part.Active); written += 16)
            {
                bool all = true;
                for (int i = 0; i < 16 && all; i++) all = part.LRun[written + i] > 0;
                if (!all) break;
                for (int i = 0; i < 16; i++) factors[i] = 1f / part.LRun[written + i];
                for (int x = 0; x < d; x += 16)
                {
                    for (int i = 0; i < 16; i++)
                    {
                        src[i] = part.Ot + (x + i) * m + written;
                        dst[i] = (float*)O.At(b, part.Row[written + i], part.Head[written + i]) + x;
                    }
                    Transpose.Block16(src, dst, factors);
                }
            }
        }
        for (int c = 0; c < part.Cols; c++)
        {
            int i = part.Row[c], h = part.Head[c];
            bool seen = c < part.Active && part.TileCount > 0 && part.LRun[c] > 0;
            T* dst = O.At(b, i, h);
            float lse = float.NegativeInfinity;
            if (seen)
            {
                // Column c of Oᵀ straight into the output row (a staged copy measured 2x slower here).
                if (c >= written) Elements.Write(part.Ot + c, m, 1f / part.LRun[c], d, dst, O.S3);
                if (Lse.Base != null) lse = LogitScale.NaturalLse(part.MRun[c], Factor, part.LRun[c]);
            }
            else
            {
                Elements.Zero(dst, O.S3, d);
            }
            if (Lse.Base != null) *Lse.At(b, h, i) = lse;
        }
    }

    /// <summary>Qᵀ[D, M]: column c holds query row Row[c] of head Head[c] times the scale's sign; unused columns are 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void PackQueries(ref Part part, int b)
    {
        int m = M, d = Args.Shape.HeadDim;
        float sign = LogitScale.QuerySign(Args.Scale);
        float* qt = part.Qt;
        if (Q.S3 == 1)
        {
            for (int c = 0; c < part.Cols; c++) Elements.Prefetch(Q.At(b, part.Row[c], part.Head[c]), d * sizeof(T));
        }
        int c0 = 0;
        if (typeof(T) == typeof(float) && Q.S3 == 1 && d % 16 == 0 && Transpose.Supported)
        {
            // 16 query rows at a time through a 16x16 block transpose (the scalar loop below is ~5% of short-range calls).
            float** src = stackalloc float*[16];
            float** dst = stackalloc float*[16];
            float* factors = stackalloc float[16];
            new Span<float>(factors, 16).Fill(sign);
            for (; c0 + 16 <= part.Cols; c0 += 16)
            {
                for (int x = 0; x < d; x += 16)
                {
                    for (int i = 0; i < 16; i++)
                    {
                        src[i] = (float*)Q.At(b, part.Row[c0 + i], part.Head[c0 + i]) + x;
                        dst[i] = qt + (x + i) * m + c0;
                    }
                    Transpose.Block16(src, dst, factors);
                }
            }
        }
        for (int c = c0; c < m; c++)
        {
            if (c < part.Cols)
            {
                Elements.Read(Q.At(b, part.Row[c], part.Head[c]), Q.S3, sign, d, qt + c, m);
            }
            else
            {
                for (int x = 0; x < d; x++) qt[x * m + c] = 0;
            }
        }
    }

    /// <summary>
    /// Lists the key tiles the active columns need: the union of their visible ranges, cut at kept
    /// block-sparse segments and at multiples of the key tile size (so parts walk the same grid);
    /// marks tiles that need element-wise masking. Returns the tile count.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private int PlanKeyTiles(Scratch sc, RowRules rules, ref Part part)
    {
        int first = part.Row[0], last = part.Row[part.Active - 1];
        int jStart = rules.Lo(first), jEnd = rules.Hi(last) + 1;
        if (jStart >= jEnd) return 0;
        int fullLo = rules.Lo(last), fullHi = rules.Hi(first);   // every active column sees [fullLo, fullHi]
        KeyTile* tiles = part.Tiles;
        int n = 0, size = FlashEngine.KeyTileSize;
        var bm = Args.Mask.BlockMask;
        if (bm is null)
        {
            for (int j0 = jStart; j0 < jEnd;)
            {
                int j1 = Math.Min((j0 / size + 1) * size, jEnd);
                tiles[n++] = new KeyTile(j0, j1, !(fullLo <= j0 && fullHi >= j1 - 1), false);
                j0 = j1;
            }
            return n;
        }

        int bk = bm.BlockSizeK, kbFirst = jStart / bk, kbLast = (jEnd - 1) / bk, nkb = kbLast - kbFirst + 1;
        Span<bool> any = sc.Flags.AsSpan(0, nkb), all = sc.Flags.AsSpan(nkb, nkb);
        any.Clear();
        all.Fill(true);
        int prevH = -1, prevQb = -1;
        for (int c = 0; c < part.Active; c++)
        {
            int h = part.Head[c], qb = part.Row[c] / bm.BlockSizeQ;
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
            for (int j0 = segStart; j0 < segEnd;)
            {
                int j1 = Math.Min((j0 / size + 1) * size, segEnd);
                bool partial = false;
                for (int kb = j0 / bk; kb <= (j1 - 1) / bk; kb++) partial |= !all[kb - kbFirst];
                tiles[n++] = new KeyTile(j0, j1, !(fullLo <= j0 && fullHi >= j1 - 1), partial);
                j0 = j1;
            }
            x = y;
        }
        return n;
    }

    /// <summary>
    /// Sᵀ[N, M] = K[tile]·(±Qᵀ) (raw, unscaled scores), with -inf where a column may not see a key.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Scores(Scratch sc, int b, int kvh, KeyTile kt, ref Part part)
    {
        int m = M, w = TOps.Count, nt = kt.End - kt.Start;
        float* st = sc.St;
        MicroKernel<TOps, TV>.Gemm(nt, K.At(b, kt.Start, kvh), K.S1, K.S3, part.Qt, m, st, m, Args.Shape.HeadDim, accumulate: false);
        if (!kt.RangeMask && !kt.BlockMask)
        {
            return;
        }
        float* blockBias = part.Bias;
        TV lo0 = TOps.Load(part.Lo), lo1 = TOps.Load(part.Lo + w), hi0 = TOps.Load(part.Hi), hi1 = TOps.Load(part.Hi + w);
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
                        blockBias[c] = c < part.Active && bm.Row(part.Head[c], part.Row[c] / bm.BlockSizeQ)[kb] ? 0f : float.NegativeInfinity;
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

    /// <summary>Headroom of the lazy rescale in log2 units: probabilities within a tile may reach 2^8 before the max moves.</summary>
    private const float LazyRescaleLog2 = 8f;

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
        // Lazy rescaling: a column keeps its running max unless the tile raises it by more than 2^LazyRescaleLog2
        // in probability, so P stays <= 2^LazyRescaleLog2 (exact: O and the sum share the max) and most tiles
        // skip rescaling O. The first finite score always sets the max (-inf + slack = -inf).
        TV slack = TOps.Broadcast(MathF.Min(LazyRescaleLog2 / factor, 1e30f));
        max0 = TOps.RaiseAbove(old0, max0, slack);
        max1 = TOps.RaiseAbove(old1, max1, slack);
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
    private void WriteProbabilities(Scratch sc, int b, int kvh, ref Part part)
    {
        int m = M, sk = Args.Shape.KeyLength;
        for (int c = 0; c < part.Cols; c++)
        {
            Elements.Zero(Probs.At(b, part.Head[c], part.Row[c]), Probs.S3, sk);
        }
        for (int t = 0; t < part.TileCount; t++)
        {
            KeyTile kt = part.Tiles[t];
            Scores(sc, b, kvh, kt, ref part);
            for (int c = 0; c < part.Active; c++)
            {
                if (!(part.LRun[c] > 0)) continue;
                float* dst = Probs.At(b, part.Head[c], part.Row[c]);
                float max = part.MRun[c], inv = 1f / part.LRun[c], factor = Factor;
                for (int j = kt.Start; j < kt.End; j++)
                {
                    dst[j * Probs.S3] = MathF.Pow(2f, (sc.St[(j - kt.Start) * m + c] - max) * factor) * inv;
                }
            }
        }
    }
}
