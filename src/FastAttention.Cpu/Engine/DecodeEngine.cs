// Split-KV decode (flash-decoding) over KV caches: few query rows against long cached contexts.
using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FastAttention.Cpu.Engine;

/// <summary>A run of consecutive cached tokens <c>[Start, Start + Count)</c> whose rows are evenly spaced in storage.</summary>
/// <param name="Start">Position of the first token in the sequence.</param>
/// <param name="Count">Tokens in the run.</param>
/// <param name="Offset">Element offset of the run's first row of KV head 0 in the key and value storage.</param>
internal readonly record struct KeyRun(int Start, int Count, nint Offset);

/// <summary>
/// Where each sequence's cached keys and values are: inside a run, KV head h's rows are contiguous
/// (D elements apart) starting <c>h * HeadStride</c> after the run's offset; one run per contiguous
/// sequence, one per page when paged.
/// </summary>
internal sealed unsafe class CacheSource<T> where T : unmanaged
{
    public required T* Keys, Values;
    public required nint HeadStride;
    /// <summary>Runs of sequence b are <c>Runs[RunStart[b] .. RunStart[b + 1])</c>.</summary>
    public required KeyRun[] Runs;
    public required int[] RunStart;
    public required int[] Lengths;
}

/// <summary>Loads 16 consecutive elements of a K or V row, from element <c>x</c> on, as floats.</summary>
internal unsafe interface IRowLoad { static abstract Vector512<float> Load16(void* row, int x); }

/// <summary>fp32 rows.</summary>
internal unsafe struct FloatRowLoad : IRowLoad
{
    public static Vector512<float> Load16(void* row, int x) => Vector512.Load((float*)row + x);
}

/// <summary>fp16 rows, converted in registers (<see cref="Elements.LoadHalf16"/>).</summary>
internal unsafe struct HalfRowLoad : IRowLoad
{
    public static Vector512<float> Load16(void* row, int x) => Elements.LoadHalf16((ushort*)row + x);
}

/// <summary>bf16 rows, converted in registers (the bits moved to a float's upper half).</summary>
internal unsafe struct BFloat16RowLoad : IRowLoad
{
    public static Vector512<float> Load16(void* row, int x) =>
        Vector512.ShiftLeft(Vector512.WidenLower(Vector256.Load((ushort*)row + x).ToVector512Unsafe()), 16).AsSingle();
}

/// <summary>Validated parameters of one decode call.</summary>
internal readonly record struct DecodeArgs(int Batch, int QueryLength, int Heads, int KvHeads, int HeadDim, float Scale, AttentionMask Mask, int Parallelism, VectorWidth Width = VectorWidth.Auto);

/// <summary>
/// Decode attention over a cache, split over the key axis so one sequence uses every core: each
/// (batch, KV head, split) item scores its keys against all query rows of the heads sharing that KV
/// head (K/V read once per KV head), keeps a running max / sum / output per query column, and a
/// combine step merges the splits by their log-sum-exp. Dot products run along D with vector FMAs,
/// so a token costs one pass over its K and V rows: the kernel is bound by memory bandwidth.
/// </summary>
internal static unsafe class DecodeEngine
{
    /// <summary>Fewest keys worth a split of their own.</summary>
    private const int MinKeysPerSplit = 256;

    public static void Run<T>(DecodeArgs args, View<T> q, View<T> o, View<float> lse, CacheSource<T> cache) where T : unmanaged
    {
        switch (Widths.Resolve(args.Width))
        {
            case VectorWidth.V512: Run<T, V512, Vector512<float>>(args, q, o, lse, cache); break;
            case VectorWidth.V256: Run<T, V256, Vector256<float>>(args, q, o, lse, cache); break;
            default: Run<T, V128, Vector128<float>>(args, q, o, lse, cache); break;
        }
    }

    private static void Run<T, TOps, TV>(DecodeArgs a, View<T> q, View<T> o, View<float> lse, CacheSource<T> cache)
        where T : unmanaged where TOps : struct, IVecOps<TV> where TV : struct
    {
        int groups = a.Batch * a.KvHeads, cols = a.QueryLength * (a.Heads / a.KvHeads), d = a.HeadDim;
        int maxLength = cache.Lengths.Max();
        int wanted = (int)Math.Min(128, (4L * a.Parallelism + groups - 1) / groups);
        int splits = Math.Max(1, Math.Min(wanted, (maxLength + MinKeysPerSplit - 1) / MinKeysPerSplit));
        int keysPerSplit = Math.Max(1, (maxLength + splits - 1) / splits);
        long items = (long)groups * splits;
        // Partial results per item: max [cols], sum [cols], output [cols, D].
        int partialSize = cols * (d + 2);
        float[] partials = ArrayPool<float>.Shared.Rent(checked((int)(items * partialSize)));
        try
        {
            fixed (float* part = partials)
            {
                var job = new DecodeJob<T, TOps, TV>(a, q, cache, part, partialSize, splits, keysPerSplit);
                int next = -1;
                int workers = (int)Math.Min(a.Parallelism, items);
                Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, _ =>
                {
                    int item;
                    while ((item = Interlocked.Increment(ref next)) < items) job.Process(item);
                });
                job.Combine(o, lse);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(partials);
        }
    }
}

/// <summary>One decode call's state, shared read-only by the worker threads.</summary>
internal sealed unsafe class DecodeJob<T, TOps, TV>(
    DecodeArgs args, View<T> query, CacheSource<T> cache, float* partials, int partialSize, int splits, int keysPerSplit)
    where T : unmanaged where TOps : struct, IVecOps<TV> where TV : struct
{
    private const int Block = 128;

    private int Group => args.Heads / args.KvHeads;
    private int Columns => args.QueryLength * Group;
    private float Factor => LogitScale.Factor(args.Scale);

    /// <summary>Scores one (batch, KV head, split) item into its partial max / sum / output.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Process(int item)
    {
        int d = args.HeadDim, g = Group, cols = Columns;
        int split = item % splits, kvh = item / splits % args.KvHeads, b = item / splits / args.KvHeads;
        float* mRun = partials + (nint)item * partialSize, lRun = mRun + cols, acc = lRun + cols;
        new Span<float>(mRun, cols).Fill(float.NegativeInfinity);
        new Span<float>(lRun, cols).Clear();
        new Span<float>(acc, cols * d).Clear();

        var rules = new RowRules(args.Mask, args.QueryLength, cache.Lengths[b]);
        int k0 = Math.Max(split * keysPerSplit, rules.Lo(0));
        int k1 = Math.Min((split + 1) * keysPerSplit, rules.Hi(args.QueryLength - 1) + 1);
        if (k0 >= k1) return;

        var sc = Scratch.Current;
        sc.Ensure(d, Math.Max(cols, Block), Block, 0, 0, 0, parts: 2);
        float* qs = sc.Qt;                      // [cols, D]: query rows times the scale's sign
        float* scores = sc.St;                  // [cols, Block]
        float* kRows = sc.Ot, vRows = sc.Ot + Block * d;   // converted rows when T is not float
        int* lo = sc.Cols, hi = sc.Cols + cols;
        float sign = LogitScale.QuerySign(args.Scale);
        for (int c = 0; c < cols; c++)
        {
            int i = c / g, h = kvh * g + c % g;
            Elements.Read(query.At(b, i, h), query.S3, sign, d, qs + c * d, 1);
            lo[c] = rules.Lo(i);
            hi[c] = rules.Hi(i);
        }

        // Blocks of up to Block keys, gathered across runs (pages) through row pointers. The next block's rows are
        // gathered and prefetched before the current block is scored, so its loads are in flight a whole block ahead
        // (measured on fp32: +10-20%, and 16-token pages as fast as a contiguous cache). fp16 / bf16 rows of
        // one-column decode (plain multi-head) are converted in registers as the kernels load them; other fp16 / bf16
        // rows are converted to fp32 scratch per block, right before use.
        sc.EnsurePointers(6 * Block);
        float** kCur = sc.Pointers, vCur = kCur + Block, kNext = vCur + Block, vNext = kNext + Block;
        float** kConverted = vNext + Block, vConverted = kConverted + Block;
        bool fused = (typeof(T) == typeof(Half) || typeof(T) == typeof(BFloat16)) && cols == 1 && typeof(TV) == typeof(Vector512<float>) && d % 16 == 0;
        bool convert = typeof(T) != typeof(float) && !fused;
        if (convert)
        {
            for (int j = 0; j < Block; j++)
            {
                kConverted[j] = kRows + j * d;
                vConverted[j] = vRows + j * d;
            }
        }
        var cursor = new Cursor(cache.RunStart[b], k0);
        int blockStart = k0;
        int n = Gather(ref cursor, b, kvh, k1, kCur, vCur);
        while (n > 0)
        {
            int nNext = Gather(ref cursor, b, kvh, k1, kNext, vNext);
            float** k = kCur, v = vCur;
            if (convert)
            {
                for (int j = 0; j < n; j++)
                {
                    Elements.Read((T*)kCur[j], 1, d, kConverted[j]);
                    Elements.Read((T*)vCur[j], 1, d, vConverted[j]);
                }
                k = kConverted;
                v = vConverted;
            }
            if (fused) ScoreConvertedRows((void**)kCur, n, qs, d, scores, kRows);
            else Score(k, n, qs, cols, d, scores);
            Mask(scores, n, blockStart, cols, lo, hi);
            Accumulate(scores, n, v, cols, d, mRun, lRun, acc, fused ? (void**)vCur : null);
            blockStart += n;
            float** kt = kCur, vt = vCur;
            kCur = kNext;
            vCur = vNext;
            kNext = kt;
            vNext = vt;
            n = nNext;
        }
    }

    /// <summary>Where the next gathered block starts: a run (page) index and a key index.</summary>
    private struct Cursor(int run, int key)
    {
        public int Run = run;
        public int Key = key;
    }

    /// <summary>
    /// Row pointers of the next up to <see cref="Block"/> keys below <paramref name="k1"/> from the cursor on, across
    /// runs, each row prefetched; for fp16 / bf16 the pointers address <typeparamref name="T"/> rows (cast to float*).
    /// Returns the number of keys (0 at the end).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private int Gather(ref Cursor cursor, int b, int kvh, int k1, float** kRow, float** vRow)
    {
        int d = args.HeadDim, n = 0, runEnd = cache.RunStart[b + 1];
        while (n < Block && cursor.Run < runEnd)
        {
            KeyRun run = cache.Runs[cursor.Run];
            int from = Math.Max(cursor.Key, run.Start), to = Math.Min(k1, run.Start + run.Count);
            if (from >= to)
            {
                if (run.Start >= k1) break;
                cursor.Run++;
                continue;
            }
            int take = Math.Min(to - from, Block - n);
            T* kBase = cache.Keys + run.Offset + kvh * cache.HeadStride, vBase = cache.Values + run.Offset + kvh * cache.HeadStride;
            for (int j = from; j < from + take; j++, n++)
            {
                nint row = (nint)(j - run.Start) * d;
                kRow[n] = (float*)(kBase + row);
                vRow[n] = (float*)(vBase + row);
                // The scoring pass reads rows four or sixteen at a time and the weighted sum in D-slices, neither
                // in the order hardware prefetchers expect: pull whole rows in, one block ahead.
                Elements.Prefetch(kRow[n], d * sizeof(T));
                Elements.Prefetch(vRow[n], d * sizeof(T));
            }
            cursor.Key = from + take;
            if (cursor.Key >= to) cursor.Run++;
        }
        return n;
    }

    /// <summary>scores[c, j] = K[j]·q[c] for the block's n keys (row pointers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Score(float** k, int n, float* qs, int cols, int d, float* scores)
    {
        if (cols == 1)
        {
            int j = typeof(TV) == typeof(Vector512<float>) && d % 16 == 0 && Transpose.Supported
                ? ScoreSixteenKeys<FloatRowLoad>((void**)k, n, qs, d, scores) : 0;
            ScoreOneColumn(k + j, n - j, qs, d, scores + j);
            return;
        }
        for (int c0 = 0; c0 < cols; c0 += 4)
        {
            switch (cols - c0)
            {
                case 1: ScoreColumns<Rows1>(k, n, qs + c0 * d, d, scores + c0 * Block); break;
                case 2: ScoreColumns<Rows2>(k, n, qs + c0 * d, d, scores + c0 * Block); break;
                case 3: ScoreColumns<Rows3>(k, n, qs + c0 * d, d, scores + c0 * Block); break;
                default: ScoreColumns<Rows4>(k, n, qs + c0 * d, d, scores + c0 * Block); break;
            }
        }
    }

    /// <summary>Up to 4 query columns against each key row: the row is loaded once per column group.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoreColumns<TCols>(float** k, int n, float* q, int d, float* scores) where TCols : struct, IRows
    {
        int w = TOps.Count, dv = d - d % w;
        float* q1 = q + d, q2 = q + 2 * d, q3 = q + 3 * d;
        for (int j = 0; j < n; j++)
        {
            float* row = k[j];
            TV a0 = TOps.Zero, a1 = TOps.Zero, a2 = TOps.Zero, a3 = TOps.Zero;
            for (int x = 0; x < dv; x += w)
            {
                TV kv = TOps.Load(row + x);
                a0 = TOps.Fma(kv, TOps.Load(q + x), a0);
                if (TCols.Count > 1) a1 = TOps.Fma(kv, TOps.Load(q1 + x), a1);
                if (TCols.Count > 2) a2 = TOps.Fma(kv, TOps.Load(q2 + x), a2);
                if (TCols.Count > 3) a3 = TOps.Fma(kv, TOps.Load(q3 + x), a3);
            }
            float s0 = TOps.Sum(a0);
            for (int x = dv; x < d; x++) s0 += row[x] * q[x];
            scores[j] = s0;
            if (TCols.Count > 1) scores[Block + j] = Tail(TOps.Sum(a1), row, q1, dv, d);
            if (TCols.Count > 2) scores[2 * Block + j] = Tail(TOps.Sum(a2), row, q2, dv, d);
            if (TCols.Count > 3) scores[3 * Block + j] = Tail(TOps.Sum(a3), row, q3, dv, d);
        }
    }

    /// <summary>One query column (plain multi-head decode): four key rows per pass so each q vector is loaded once per four keys.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoreOneColumn(float** k, int n, float* q, int d, float* scores)
    {
        int w = TOps.Count, dv = d - d % w, j = 0;
        for (; j + 4 <= n; j += 4)
        {
            float* r0 = k[j], r1 = k[j + 1], r2 = k[j + 2], r3 = k[j + 3];
            TV a0 = TOps.Zero, a1 = TOps.Zero, a2 = TOps.Zero, a3 = TOps.Zero;
            for (int x = 0; x < dv; x += w)
            {
                TV qv = TOps.Load(q + x);
                a0 = TOps.Fma(TOps.Load(r0 + x), qv, a0);
                a1 = TOps.Fma(TOps.Load(r1 + x), qv, a1);
                a2 = TOps.Fma(TOps.Load(r2 + x), qv, a2);
                a3 = TOps.Fma(TOps.Load(r3 + x), qv, a3);
            }
            scores[j] = Tail(TOps.Sum(a0), r0, q, dv, d);
            scores[j + 1] = Tail(TOps.Sum(a1), r1, q, dv, d);
            scores[j + 2] = Tail(TOps.Sum(a2), r2, q, dv, d);
            scores[j + 3] = Tail(TOps.Sum(a3), r3, q, dv, d);
        }
        for (; j < n; j++)
        {
            TV a = TOps.Zero;
            for (int x = 0; x < dv; x += w) a = TOps.Fma(TOps.Load(k[j] + x), TOps.Load(q + x), a);
            scores[j] = Tail(TOps.Sum(a), k[j], q, dv, d);
        }
    }

    /// <summary>
    /// One query column, 16 keys at a time with 512-bit vectors: 16 dot-product accumulators reduced
    /// together by a transpose-and-add tree (45 shuffles and adds for 16 keys instead of a horizontal sum
    /// per key, which was about a third of the scoring pass). <typeparamref name="TRow"/> loads 16 elements of
    /// a row as floats (fp32 rows, or fp16 rows converted in registers). Returns the keys done (a multiple of 16).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int ScoreSixteenKeys<TRow>(void** k, int n, float* q, int d, float* scores) where TRow : struct, IRowLoad
    {
        int j = 0;
        for (; j + 16 <= n; j += 16)
        {
            void** r = k + j;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            Vector512<float> a8 = default, a9 = default, a10 = default, a11 = default, a12 = default, a13 = default, a14 = default, a15 = default;
            for (int x = 0; x < d; x += 16)
            {
                Vector512<float> qv = Vector512.Load(q + x);
                a0 = Vector512.FusedMultiplyAdd(TRow.Load16(r[0], x), qv, a0);
                a1 = Vector512.FusedMultiplyAdd(TRow.Load16(r[1], x), qv, a1);
                a2 = Vector512.FusedMultiplyAdd(TRow.Load16(r[2], x), qv, a2);
                a3 = Vector512.FusedMultiplyAdd(TRow.Load16(r[3], x), qv, a3);
                a4 = Vector512.FusedMultiplyAdd(TRow.Load16(r[4], x), qv, a4);
                a5 = Vector512.FusedMultiplyAdd(TRow.Load16(r[5], x), qv, a5);
                a6 = Vector512.FusedMultiplyAdd(TRow.Load16(r[6], x), qv, a6);
                a7 = Vector512.FusedMultiplyAdd(TRow.Load16(r[7], x), qv, a7);
                a8 = Vector512.FusedMultiplyAdd(TRow.Load16(r[8], x), qv, a8);
                a9 = Vector512.FusedMultiplyAdd(TRow.Load16(r[9], x), qv, a9);
                a10 = Vector512.FusedMultiplyAdd(TRow.Load16(r[10], x), qv, a10);
                a11 = Vector512.FusedMultiplyAdd(TRow.Load16(r[11], x), qv, a11);
                a12 = Vector512.FusedMultiplyAdd(TRow.Load16(r[12], x), qv, a12);
                a13 = Vector512.FusedMultiplyAdd(TRow.Load16(r[13], x), qv, a13);
                a14 = Vector512.FusedMultiplyAdd(TRow.Load16(r[14], x), qv, a14);
                a15 = Vector512.FusedMultiplyAdd(TRow.Load16(r[15], x), qv, a15);
            }
            Transpose.SumEach16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15).Store(scores + j);
        }
        return j;
    }

    /// <summary>
    /// One query column against fp16 / bf16 key rows (D a multiple of 16), converted in registers: 16 keys at a time
    /// through <see cref="ScoreSixteenKeys{TRow}"/>, the rest one by one through <paramref name="row"/> (D floats of scratch).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoreConvertedRows(void** k, int n, float* q, int d, float* scores, float* row)
    {
        int j = typeof(T) == typeof(Half) ? ScoreSixteenKeys<HalfRowLoad>(k, n, q, d, scores) : ScoreSixteenKeys<BFloat16RowLoad>(k, n, q, d, scores);
        for (; j < n; j++)
        {
            Elements.Read((T*)k[j], 1, d, row);
            Vector512<float> a = default;
            for (int x = 0; x < d; x += 16) a = Vector512.FusedMultiplyAdd(Vector512.Load(row + x), Vector512.Load(q + x), a);
            scores[j] = Vector512.Sum(a);
        }
    }

    /// <summary>acc[0..D) += Σ_j p[j]·V[j] over fp16 / bf16 V rows (D a multiple of 16), converted in registers by <typeparamref name="TRow"/>, up to 8 vectors of D at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddWeightedConvertedRows<TRow>(float* p, int n, void** v, int d, float* acc) where TRow : struct, IRowLoad
    {
        int x = 0;
        for (; x + 128 <= d; x += 128)
        {
            Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
            for (int j = 0; j < n; j++)
            {
                void* r = v[j];
                var b = Vector512.Create(p[j]);
                c0 = Vector512.FusedMultiplyAdd(TRow.Load16(r, x), b, c0);
                c1 = Vector512.FusedMultiplyAdd(TRow.Load16(r, x + 16), b, c1);
                c2 = Vector512.FusedMultiplyAdd(TRow.Load16(r, x + 32), b, c2);
                c3 = Vector512.FusedMultiplyAdd(TRow.Load16(r, x + 48), b, c3);
                c4 = Vector512.FusedMultiplyAdd(TRow.Load16(r, x + 64), b, c4);
                c5 = Vector512.FusedMultiplyAdd(TRow.Load16(r, x + 80), b, c5);
                c6 = Vector512.FusedMultiplyAdd(TRow.Load16(r, x + 96), b, c6);
                c7 = Vector512.FusedMultiplyAdd(TRow.Load16(r, x + 112), b, c7);
            }
            float* o = acc + x;
            (Vector512.Load(o) + c0).Store(o);
            (Vector512.Load(o + 16) + c1).Store(o + 16);
            (Vector512.Load(o + 32) + c2).Store(o + 32);
            (Vector512.Load(o + 48) + c3).Store(o + 48);
            (Vector512.Load(o + 64) + c4).Store(o + 64);
            (Vector512.Load(o + 80) + c5).Store(o + 80);
            (Vector512.Load(o + 96) + c6).Store(o + 96);
            (Vector512.Load(o + 112) + c7).Store(o + 112);
        }
        for (; x < d; x += 16)
        {
            Vector512<float> c = default;
            for (int j = 0; j < n; j++) c = Vector512.FusedMultiplyAdd(TRow.Load16(v[j], x), Vector512.Create(p[j]), c);
            (Vector512.Load(acc + x) + c).Store(acc + x);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Tail(float sum, float* row, float* q, int from, int d)
    {
        for (int x = from; x < d; x++) sum += row[x] * q[x];
        return sum;
    }

    /// <summary>-inf where key j0 + j is outside column c's visible range.</summary>
    private static void Mask(float* scores, int n, int j0, int cols, int* lo, int* hi)
    {
        for (int c = 0; c < cols; c++)
        {
            if (lo[c] <= j0 && hi[c] >= j0 + n - 1) continue;
            for (int j = 0; j < n; j++)
            {
                if (j0 + j < lo[c] || j0 + j > hi[c]) scores[c * Block + j] = float.NegativeInfinity;
            }
        }
    }

    /// <summary>
    /// Online softmax per column over the block, then acc[c] += Σ_j p[c, j]·V[j], over the fp16 / bf16 rows
    /// <paramref name="halfRows"/> (converted in registers) instead of <paramref name="v"/> when given (one column, D a multiple of 16).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Accumulate(float* scores, int n, float** v, int cols, int d, float* mRun, float* lRun, float* acc, void** halfRows)
    {
        int w = TOps.Count, dv = d - d % w;
        float f = Factor;
        for (int c = 0; c < cols; c++)
        {
            float* s = scores + c * Block;
            float max = mRun[c];
            for (int j = 0; j < n; j++) max = MathF.Max(max, s[j]);
            if (float.IsNegativeInfinity(max))
            {
                new Span<float>(s, n).Clear();   // nothing visible yet: contributes nothing
                continue;
            }
            float alpha = MathF.Pow(2f, (mRun[c] - max) * f);   // 0 when the old max is -inf
            int nv = (n + w - 1) / w * w;
            for (int j = n; j < nv; j++) s[j] = float.NegativeInfinity;
            TV mv = TOps.Broadcast(max), fv = TOps.Broadcast(f), sv = TOps.Zero;
            for (int j = 0; j < nv; j += w)
            {
                TV p = TOps.Exp2(TOps.Mul(TOps.Sub(TOps.Load(s + j), mv), fv));
                TOps.Store(s + j, p);
                sv = TOps.Add(sv, p);
            }
            float sum = TOps.Sum(sv);
            mRun[c] = max;
            lRun[c] = lRun[c] * alpha + sum;
            float* o = acc + c * d;
            if (alpha != 1f)
            {
                TV av = TOps.Broadcast(alpha);
                for (int x = 0; x < dv; x += w) TOps.Store(o + x, TOps.Mul(TOps.Load(o + x), av));
                for (int x = dv; x < d; x++) o[x] *= alpha;
            }
        }
        if (halfRows != null)
        {
            if (typeof(T) == typeof(Half)) AddWeightedConvertedRows<HalfRowLoad>(scores, n, halfRows, d, acc);
            else AddWeightedConvertedRows<BFloat16RowLoad>(scores, n, halfRows, d, acc);
            return;
        }
        for (int c0 = 0; c0 < cols; c0 += 4)
        {
            switch (cols - c0)
            {
                case 1: AddWeightedRows<Rows1>(scores + c0 * Block, n, v, d, acc + c0 * d); break;
                case 2: AddWeightedRows<Rows2>(scores + c0 * Block, n, v, d, acc + c0 * d); break;
                case 3: AddWeightedRows<Rows3>(scores + c0 * Block, n, v, d, acc + c0 * d); break;
                default: AddWeightedRows<Rows4>(scores + c0 * Block, n, v, d, acc + c0 * d); break;
            }
        }
    }

    /// <summary>
    /// acc[c] += Σ_j p[c, j]·V[j] for up to 4 columns, one 2-vector slice of D at a time held in
    /// registers across the block's keys (masked keys have p = 0 and add nothing).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddWeightedRows<TCols>(float* p, int n, float** v, int d, float* acc) where TCols : struct, IRows
    {
        int w = TOps.Count, x = 0;
        float* p1 = p + Block, p2 = p + 2 * Block, p3 = p + 3 * Block;
        float* o1 = acc + d, o2 = acc + 2 * d, o3 = acc + 3 * d;
        if (TCols.Count == 1)
        {
            // One column (plain multi-head decode): wider slices, so each V row is walked in one or two
            // passes instead of D / 2w (measured at B=8, H=8, D=128: +10-15% decode bandwidth).
            for (; x + 8 * w <= d; x += 8 * w) AddWeightedSlice8(p, n, v, x, acc + x);
            for (; x + 4 * w <= d; x += 4 * w) AddWeightedSlice4(p, n, v, x, acc + x);
        }
        for (; x + 2 * w <= d; x += 2 * w)
        {
            TV c00 = TOps.Zero, c01 = TOps.Zero, c10 = TOps.Zero, c11 = TOps.Zero;
            TV c20 = TOps.Zero, c21 = TOps.Zero, c30 = TOps.Zero, c31 = TOps.Zero;
            for (int j = 0; j < n; j++)
            {
                TV v0 = TOps.Load(v[j] + x), v1 = TOps.Load(v[j] + x + w);
                TV b = TOps.Broadcast(p[j]);
                c00 = TOps.Fma(v0, b, c00); c01 = TOps.Fma(v1, b, c01);
                if (TCols.Count > 1) { b = TOps.Broadcast(p1[j]); c10 = TOps.Fma(v0, b, c10); c11 = TOps.Fma(v1, b, c11); }
                if (TCols.Count > 2) { b = TOps.Broadcast(p2[j]); c20 = TOps.Fma(v0, b, c20); c21 = TOps.Fma(v1, b, c21); }
                if (TCols.Count > 3) { b = TOps.Broadcast(p3[j]); c30 = TOps.Fma(v0, b, c30); c31 = TOps.Fma(v1, b, c31); }
            }
            AddTo(acc + x, w, c00, c01);
            if (TCols.Count > 1) AddTo(o1 + x, w, c10, c11);
            if (TCols.Count > 2) AddTo(o2 + x, w, c20, c21);
            if (TCols.Count > 3) AddTo(o3 + x, w, c30, c31);
        }
        for (; x < d; x++)
        {
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (int j = 0; j < n; j++)
            {
                float e = v[j][x];
                s0 += p[j] * e;
                if (TCols.Count > 1) s1 += p1[j] * e;
                if (TCols.Count > 2) s2 += p2[j] * e;
                if (TCols.Count > 3) s3 += p3[j] * e;
            }
            acc[x] += s0;
            if (TCols.Count > 1) o1[x] += s1;
            if (TCols.Count > 2) o2[x] += s2;
            if (TCols.Count > 3) o3[x] += s3;
        }
    }

    /// <summary>o[0..8w) += Σ_j p[j]·V[j][x..x+8w) with eight register accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddWeightedSlice8(float* p, int n, float** v, int x, float* o)
    {
        int w = TOps.Count;
        TV c0 = TOps.Zero, c1 = TOps.Zero, c2 = TOps.Zero, c3 = TOps.Zero, c4 = TOps.Zero, c5 = TOps.Zero, c6 = TOps.Zero, c7 = TOps.Zero;
        for (int j = 0; j < n; j++)
        {
            float* r = v[j] + x;
            TV b = TOps.Broadcast(p[j]);
            c0 = TOps.Fma(TOps.Load(r), b, c0);
            c1 = TOps.Fma(TOps.Load(r + w), b, c1);
            c2 = TOps.Fma(TOps.Load(r + 2 * w), b, c2);
            c3 = TOps.Fma(TOps.Load(r + 3 * w), b, c3);
            c4 = TOps.Fma(TOps.Load(r + 4 * w), b, c4);
            c5 = TOps.Fma(TOps.Load(r + 5 * w), b, c5);
            c6 = TOps.Fma(TOps.Load(r + 6 * w), b, c6);
            c7 = TOps.Fma(TOps.Load(r + 7 * w), b, c7);
        }
        AddTo(o, w, c0, c1);
        AddTo(o + 2 * w, w, c2, c3);
        AddTo(o + 4 * w, w, c4, c5);
        AddTo(o + 6 * w, w, c6, c7);
    }

    /// <summary>o[0..4w) += Σ_j p[j]·V[j][x..x+4w) with four register accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddWeightedSlice4(float* p, int n, float** v, int x, float* o)
    {
        int w = TOps.Count;
        TV c0 = TOps.Zero, c1 = TOps.Zero, c2 = TOps.Zero, c3 = TOps.Zero;
        for (int j = 0; j < n; j++)
        {
            float* r = v[j] + x;
            TV b = TOps.Broadcast(p[j]);
            c0 = TOps.Fma(TOps.Load(r), b, c0);
            c1 = TOps.Fma(TOps.Load(r + w), b, c1);
            c2 = TOps.Fma(TOps.Load(r + 2 * w), b, c2);
            c3 = TOps.Fma(TOps.Load(r + 3 * w), b, c3);
        }
        AddTo(o, w, c0, c1);
        AddTo(o + 2 * w, w, c2, c3);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTo(float* o, int w, TV a, TV b)
    {
        TOps.Store(o, TOps.Add(TOps.Load(o), a));
        TOps.Store(o + w, TOps.Add(TOps.Load(o + w), b));
    }

    /// <summary>Merges the splits of every (batch, query row, head) by log-sum-exp and writes O and LSE.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Combine(View<T> output, View<float> lse)
    {
        int d = args.HeadDim, g = Group, cols = Columns;
        float f = Factor;
        float* row = Scratch.Current.Row;
        Scratch.Current.Ensure(d, 1, 1, d, 0, 0);
        row = Scratch.Current.Row;
        for (int b = 0; b < args.Batch; b++)
        for (int kvh = 0; kvh < args.KvHeads; kvh++)
        for (int c = 0; c < cols; c++)
        {
            int i = c / g, h = kvh * g + c % g;
            nint first = (nint)((b * args.KvHeads + kvh) * splits) * partialSize;
            float max = float.NegativeInfinity;
            for (int s = 0; s < splits; s++) max = MathF.Max(max, partials[first + s * partialSize + c]);
            T* dst = output.At(b, i, h);
            float lseValue = float.NegativeInfinity;
            if (float.IsNegativeInfinity(max))
            {
                Elements.Zero(dst, output.S3, d);
            }
            else
            {
                float total = 0;
                new Span<float>(row, d).Clear();
                for (int s = 0; s < splits; s++)
                {
                    float* p = partials + first + s * partialSize;
                    if (float.IsNegativeInfinity(p[c])) continue;
                    float weight = MathF.Pow(2f, (p[c] - max) * f);
                    total += weight * p[cols + c];
                    float* o = p + 2 * cols + c * d;
                    for (int x = 0; x < d; x++) row[x] += weight * o[x];
                }
                Elements.Write(row, 1, 1f / total, d, dst, output.S3);
                lseValue = LogitScale.NaturalLse(max, f, total);
            }
            if (lse.Base != null) *lse.At(b, h, i) = lseValue;
        }
    }
}
