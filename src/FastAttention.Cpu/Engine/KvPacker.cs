// Lazy K/V repacking for the CPU forward: rows are copied to head-contiguous fp32 the first time a work item needs them.
using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastAttention.Cpu.Engine;

/// <summary>
/// Copies K and V (each unless it is read in place) into <c>[B, Hkv, Sk, D]</c> fp32 buffers in units of
/// <see cref="Unit"/> keys, the first time any work item needs a unit. The copy then runs inside the compute
/// (the rows are still in cache when the micro-kernel reads them, and the other thread keeps computing)
/// instead of as a pass of its own before it, and units that no work item of any head visits (block-sparse
/// layouts, windows) are never copied. Thread-safe: one thread copies a unit, others needing it wait for it
/// (the copies only move validated, in-range rows and cannot throw, so a claimed unit is always published).
/// <para>
/// fp32 K and V with several KV heads (256- or 512-bit kernels, D a multiple of 16) copy a unit for all KV
/// heads at once, in the source's memory order, with the heads not needed now written around the caches
/// (<see cref="CopyAllHeads"/>).
/// </para>
/// </summary>
internal sealed unsafe class KvPacker<T> : IDisposable where T : unmanaged
{
    /// <summary>Keys per unit; divides <see cref="FlashEngine.KeyTileSize"/>.</summary>
    public const int Unit = 64;

    private const int NotCopied = 0, Copying = 1, Ready = 2;

    private readonly View<T> _kFrom, _vFrom;
    private readonly View<float> _kTo, _vTo;
    private readonly bool _copyK, _copyV;
    private readonly int _kvHeads, _keyLength, _headDim, _units;
    private readonly int[] _state;         // [B, Hkv, units]: NotCopied, Copying or Ready
    private readonly bool _streamOthers;   // fp32 BSHD-like rows, aligned packed rows, AVX: see CopyAllHeads
    private readonly bool _stream512;      // 512-bit non-temporal stores (else 256-bit)

    /// <param name="kFrom">K view indexed (b, key, kvh); copied when <paramref name="kTo"/> has a base.</param>
    /// <param name="kTo">Packed K <c>[B, Hkv, Sk, D]</c> indexed (b, key, kvh), or default to read K in place.</param>
    /// <param name="vFrom">V view, as <paramref name="kFrom"/>.</param>
    /// <param name="vTo">Packed V, as <paramref name="kTo"/>.</param>
    /// <param name="shape">The call's shape.</param>
    /// <param name="vectorFloats">Floats per vector of the call's kernels (16, 8 or 4): the width of the non-temporal stores, none for 4.</param>
    public KvPacker(View<T> kFrom, View<float> kTo, View<T> vFrom, View<float> vTo, AttentionShape shape, int vectorFloats)
    {
        (_kFrom, _kTo, _vFrom, _vTo) = (kFrom, kTo, vFrom, vTo);
        _copyK = kTo.Base != null;
        _copyV = vTo.Base != null;
        (_kvHeads, _keyLength, _headDim) = (shape.KvHeads, shape.KeyLength, shape.HeadDim);
        _units = (shape.KeyLength + Unit - 1) / Unit;
        _streamOthers = typeof(T) == typeof(float) && _copyK && _copyV && shape.KvHeads > 1 && shape.HeadDim % 16 == 0
            && (vectorFloats == 16 ? Avx512F.IsSupported : vectorFloats == 8 && Avx.IsSupported)
            && kFrom.S3 == 1 && vFrom.S3 == 1 && ((nint)kTo.Base & 63) == 0 && ((nint)vTo.Base & 63) == 0;
        _stream512 = vectorFloats == 16;
        int count = checked(shape.Batch * shape.KvHeads * _units);
        _state = ArrayPool<int>.Shared.Rent(count);
        Array.Clear(_state, 0, count);
    }

    /// <summary>Makes keys <c>[j0, j1)</c> of (b, kvh) readable in the packed buffers (copying the units not yet copied).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Ensure(int b, int kvh, int j0, int j1)
    {
        int first = (b * _kvHeads + kvh) * _units;
        for (int u = j0 / Unit, last = (j1 - 1) / Unit; u <= last; u++)
        {
            ref int state = ref _state[first + u];
            if (Volatile.Read(ref state) == Ready) continue;
            if (Interlocked.CompareExchange(ref state, Copying, NotCopied) == NotCopied)
            {
                if (_streamOthers) { CopyAllHeads(b, kvh, u); continue; }
                Copy(b, kvh, u);
                Volatile.Write(ref state, Ready);
                continue;
            }
            var spin = new SpinWait();
            while (Volatile.Read(ref state) != Ready) spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Copy(int b, int kvh, int unit)
    {
        int d = _headDim, start = unit * Unit, end = Math.Min(_keyLength, start + Unit);
        // All of the unit's source rows in flight at once (in BSHD they are H·D apart: demand loads row by row
        // would expose the memory latency per row).
        bool prefetchK = _copyK && _kFrom.S3 == 1, prefetchV = _copyV && _vFrom.S3 == 1;
        for (int j = start; j < end; j++)
        {
            if (prefetchK) Elements.Prefetch(_kFrom.At(b, j, kvh), d * sizeof(T));
            if (prefetchV) Elements.Prefetch(_vFrom.At(b, j, kvh), d * sizeof(T));
        }
        for (int j = start; j < end; j++)
        {
            if (_copyK) Elements.Read(_kFrom.At(b, j, kvh), _kFrom.S3, d, _kTo.At(b, j, kvh));
            if (_copyV) Elements.Read(_vFrom.At(b, j, kvh), _vFrom.S3, d, _vTo.At(b, j, kvh));
        }
    }

    /// <summary>
    /// Copies unit <paramref name="unit"/> of head <paramref name="kvh"/> (already claimed) and of every other KV head
    /// not yet copied, reading the source in memory order (in BSHD all heads of a token are adjacent: one thread
    /// copied S=4096, H=8, D=64 in 1.2–1.4 ms this way against 2.5 ms head by head). The other heads' rows go out
    /// with non-temporal stores, so they neither evict the current work nor cost a read for ownership (with plain
    /// stores this order made 10%-dense calls 5–7% slower; with them, 3–10% faster). The store fence orders those
    /// stores before the units are published as ready.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void CopyAllHeads(int b, int kvh, int unit)
    {
        int d = _headDim, start = unit * Unit, end = Math.Min(_keyLength, start + Unit), heads = _kvHeads;
        int first = b * heads * _units + unit;
        Span<bool> claimed = stackalloc bool[heads];
        for (int h = 0; h < heads; h++)
        {
            claimed[h] = h == kvh || Interlocked.CompareExchange(ref _state[first + h * _units], Copying, NotCopied) == NotCopied;
        }
        for (int j = start; j < end; j++)
        {
            for (int h = 0; h < heads; h++)
            {
                if (!claimed[h]) continue;
                float* ks = (float*)_kFrom.At(b, j, h), vs = (float*)_vFrom.At(b, j, h), kd = _kTo.At(b, j, h), vd = _vTo.At(b, j, h);
                if (h == kvh)
                {
                    Buffer.MemoryCopy(ks, kd, d * sizeof(float), d * sizeof(float));
                    Buffer.MemoryCopy(vs, vd, d * sizeof(float), d * sizeof(float));
                }
                else if (_stream512)
                {
                    for (int x = 0; x < d; x += 16)
                    {
                        Avx512F.StoreAlignedNonTemporal(kd + x, Vector512.Load(ks + x));
                        Avx512F.StoreAlignedNonTemporal(vd + x, Vector512.Load(vs + x));
                    }
                }
                else
                {
                    for (int x = 0; x < d; x += 8)
                    {
                        Avx.StoreAlignedNonTemporal(kd + x, Vector256.Load(ks + x));
                        Avx.StoreAlignedNonTemporal(vd + x, Vector256.Load(vs + x));
                    }
                }
            }
        }
        Sse.StoreFence();
        for (int h = 0; h < heads; h++)
        {
            if (claimed[h]) Volatile.Write(ref _state[first + h * _units], Ready);
        }
    }

    public void Dispose() => ArrayPool<int>.Shared.Return(_state);
}
