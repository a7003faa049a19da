// Contiguous KV cache for incremental decoding: [B, maxSeq, Hkv, D] keys and values on the CPU.
using System.Numerics.Tensors;
using FastAttention.Caching;
using FastAttention.Cpu.Engine;

namespace FastAttention.Cpu.Caching;

/// <summary>
/// A contiguous key/value cache: for each of <see cref="Batch"/> sequences room for
/// <see cref="MaxSequenceLength"/> tokens. Keys and values are stored <c>[B, Hkv, maxSeq, D]</c> so
/// decode streams each head's rows contiguously (in BSHD a head's rows are Hkv·D apart, a page apart
/// for Hkv·D = 1024 fp32, which defeats the hardware prefetcher: measured 2x slower decode).
/// <see cref="Keys"/> and <see cref="Values"/> view them as <c>[B, maxSeq, Hkv, D]</c> (strided), so with
/// <c>KeyLengths = Lengths</c> they feed <see cref="CpuAttention.Forward{T}"/> directly. Appends past
/// capacity throw and leave the cache exactly as it was.
/// </summary>
/// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
public sealed class KvCache<T> where T : unmanaged
{
    private readonly T[] _keys, _values;
    private readonly SequenceLengths _lengths;

    /// <summary>Creates an empty cache.</summary>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is not supported.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or the cache would exceed 2^31 elements.</exception>
    public KvCache(int batch, int maxSequenceLength, int kvHeads, int headDim)
    {
        ElementTypes.Require<T>(nameof(T));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batch);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxSequenceLength);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvHeads);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        long elements = (long)batch * maxSequenceLength * kvHeads * headDim;
        if (elements > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), maxSequenceLength,
                $"{batch} x {maxSequenceLength} x {kvHeads} x {headDim} = {elements} elements exceed {Array.MaxLength}.");
        }
        (Batch, MaxSequenceLength, KvHeads, HeadDim) = (batch, maxSequenceLength, kvHeads, headDim);
        _keys = CachePool.Allocate<T>((int)elements);
        _values = CachePool.Allocate<T>((int)elements);
        _lengths = new SequenceLengths(batch, maxSequenceLength);
    }

    /// <summary>Sequences (B).</summary>
    public int Batch { get; }
    /// <summary>Token capacity per sequence.</summary>
    public int MaxSequenceLength { get; }
    /// <summary>Key/value heads (Hkv).</summary>
    public int KvHeads { get; }
    /// <summary>Features per head (D).</summary>
    public int HeadDim { get; }
    /// <summary>Tokens stored per sequence, <c>[B]</c>.</summary>
    public ReadOnlySpan<int> Lengths => _lengths.Values;

    /// <summary>All key slots as a strided <c>[B, maxSeq, Hkv, D]</c> view; slots at or past a sequence's length hold stale data.</summary>
    public ReadOnlyTensorSpan<T> Keys => View(_keys);
    /// <summary>All value slots as a strided <c>[B, maxSeq, Hkv, D]</c> view.</summary>
    public ReadOnlyTensorSpan<T> Values => View(_values);

    /// <summary>Raw key storage (tests poison unused slots through it).</summary>
    internal Span<T> KeyStorage => _keys;
    /// <summary>Raw value storage.</summary>
    internal Span<T> ValueStorage => _values;

    /// <summary>Appends the same number of new tokens to every sequence.</summary>
    /// <param name="key">New keys, <c>[B, n, Hkv, D]</c>, any strides.</param>
    /// <param name="value">New values, <c>[B, n, Hkv, D]</c>, any strides.</param>
    /// <exception cref="ArgumentException">Wrong shapes, or a sequence would pass <see cref="MaxSequenceLength"/> (message names it and the numbers); nothing is written.</exception>
    public void Append(ReadOnlyTensorSpan<T> key, ReadOnlyTensorSpan<T> value)
    {
        CacheInputs.RequireTokens(key, value, [Batch, -1, KvHeads, HeadDim], "[B, n, Hkv, D]");
        int n = (int)key.Lengths[1];
        RequireRoom(n, nameof(key));
        for (int b = 0; b < Batch; b++)
        {
            for (int t = 0; t < n; t++) CopyToken(key, value, [b, t], b, _lengths[b] + t);
            _lengths.Advance(b, n);
        }
    }

    /// <summary>Appends new tokens to one sequence.</summary>
    /// <param name="sequence">Sequence index in [0, B).</param>
    /// <param name="key">New keys, <c>[n, Hkv, D]</c>, any strides.</param>
    /// <param name="value">New values, <c>[n, Hkv, D]</c>, any strides.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sequence"/> is outside [0, B).</exception>
    /// <exception cref="ArgumentException">Wrong shapes, or the sequence would pass <see cref="MaxSequenceLength"/>; nothing is written.</exception>
    public void Append(int sequence, ReadOnlyTensorSpan<T> key, ReadOnlyTensorSpan<T> value)
    {
        _lengths.RequireSequence(sequence);
        CacheInputs.RequireTokens(key, value, [-1, KvHeads, HeadDim], "[n, Hkv, D]");
        int n = (int)key.Lengths[0];
        _lengths.RequireRoom(sequence, n, nameof(key));
        for (int t = 0; t < n; t++) CopyToken(key, value, [t], sequence, _lengths[sequence] + t);
        _lengths.Advance(sequence, n);
    }

    /// <summary>Empties every sequence.</summary>
    public void Reset() => _lengths.Reset();

    /// <summary>Empties one sequence.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sequence"/> is outside [0, B).</exception>
    public void Reset(int sequence) => _lengths.Reset(sequence);

    /// <summary>Keeps the first <paramref name="length"/> tokens of a sequence.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The sequence is outside [0, B), or <paramref name="length"/> is outside [0, current length].</exception>
    public void Trim(int sequence, int length) => _lengths.Trim(sequence, length);

    /// <summary>Where decode reads one (sequence, KV head): row 0 and the distance between rows, in elements.</summary>
    internal (int Offset, int HeadStride) Rows(int sequence, int kvHead) =>
        ((sequence * KvHeads + kvHead) * MaxSequenceLength * HeadDim, MaxSequenceLength * HeadDim);

    private ReadOnlyTensorSpan<T> View(T[] data) =>
        TensorLayouts.BhsdAsBshd<T>(data, Batch, MaxSequenceLength, KvHeads, HeadDim);

    private void CopyToken(ReadOnlyTensorSpan<T> key, ReadOnlyTensorSpan<T> value, ReadOnlySpan<nint> prefix, int sequence, int position)
    {
        int offset = (sequence * KvHeads * MaxSequenceLength + position) * HeadDim;
        CacheInputs.CopyToken(key, prefix, _keys, offset, MaxSequenceLength * HeadDim);
        CacheInputs.CopyToken(value, prefix, _values, offset, MaxSequenceLength * HeadDim);
    }

    /// <summary>Throws unless every sequence has room for <paramref name="tokens"/> more (checked before any work by the module too).</summary>
    internal void RequireRoom(int tokens, string paramName) => _lengths.RequireRoomAll(tokens, paramName);
}

/// <summary>Shape checks and element copies shared by the caches.</summary>
internal static class CacheInputs
{
    /// <summary>Checks key/value lengths against <paramref name="expected"/> (-1 = any size &gt;= 0).</summary>
    public static void RequireTokens<T>(ReadOnlyTensorSpan<T> key, ReadOnlyTensorSpan<T> value, ReadOnlySpan<nint> expected, string layout)
    {
        foreach (var (t, name) in new[] { (0, "key"), (1, "value") })
        {
            var lengths = t == 0 ? key.Lengths : value.Lengths;
            bool ok = lengths.Length == expected.Length;
            for (int i = 0; ok && i < expected.Length; i++) ok = expected[i] < 0 || lengths[i] == expected[i];
            if (!ok)
            {
                throw new ArgumentException(
                    $"{name} must be {layout} = [{string.Join(", ", expected.ToArray().Select(e => e < 0 ? "n" : e.ToString()))}], got [{string.Join(", ", lengths.ToArray())}].", name);
            }
        }
        if (!key.Lengths.SequenceEqual(value.Lengths))
        {
            throw new ArgumentException($"value lengths [{string.Join(", ", value.Lengths.ToArray())}] must equal key lengths [{string.Join(", ", key.Lengths.ToArray())}].", nameof(value));
        }
    }

    /// <summary>
    /// Copies one token's <c>[Hkv, D]</c> block (the last two axes after <paramref name="prefix"/>) into
    /// storage: head h's D features go to <c>destination[offset + h * headStride ..]</c>.
    /// </summary>
    public static unsafe void CopyToken<T>(ReadOnlyTensorSpan<T> source, ReadOnlySpan<nint> prefix, T[] destination, int offset, int headStride) where T : unmanaged
    {
        int rank = source.Rank;
        nint sourceOffset = 0;
        for (int i = 0; i < prefix.Length; i++) sourceOffset += prefix[i] * source.Strides[i];
        nint sourceHeadStride = source.Strides[rank - 2], dimStride = source.Strides[rank - 1];
        int heads = (int)source.Lengths[rank - 2], dim = (int)source.Lengths[rank - 1];
        fixed (T* s = &Elements.First(source), d = destination)
        {
            for (int h = 0; h < heads; h++)
            {
                T* row = s + sourceOffset + h * sourceHeadStride;
                T* to = d + offset + (nint)h * headStride;
                for (int x = 0; x < dim; x++) to[x] = row[x * dimStride];
            }
        }
    }
}
