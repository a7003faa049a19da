// Contiguous KV cache in device memory, [B, Hkv, S, D] as the CPU KvCache, served by the paged kernels through a
// fixed block table of consecutive pages.
using FastAttention.Caching;
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Gpu;

/// <summary>
/// A contiguous key/value cache on the GPU: B sequences of up to <see cref="MaxSequenceLength"/> tokens, keys and
/// values each stored <c>[B, Hkv, S, D]</c> (S = <see cref="MaxSequenceLength"/> rounded up to whole pages of
/// <see cref="PageSize"/> slots). The paged append and decode kernels serve it: sequence b's slots of KV head h are
/// pages <c>b * Hkv * S / PageSize ...</c> of a pool whose head stride is <c>S * D</c>, so one kernel path covers
/// both caches. Lengths are kept on the host. Not thread-safe; one stream at a time.
/// </summary>
/// <typeparam name="T">float, <see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
public sealed class CudaKvCache<T> : IDisposable where T : unmanaged
{
    /// <summary>Slots per page of the fixed block table.</summary>
    public const int PageSize = 64;

    private readonly SequenceLengths _lengths;
    private readonly DeviceBuffer<int> _tables;
    private CudaStream? _defaultStream;

    /// <summary>Creates an empty cache.</summary>
    /// <param name="context">The device context that owns the storage.</param>
    /// <param name="batch">Sequences B.</param>
    /// <param name="maxSequenceLength">Tokens each sequence can hold.</param>
    /// <param name="kvHeads">KV heads Hkv.</param>
    /// <param name="headDim">Head dimension D: 64, 128 or 256.</param>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is not supported, or <paramref name="headDim"/> has no kernel.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or B x Hkv x pages per sequence passes int.MaxValue.</exception>
    /// <exception cref="CudaException">Allocation failed.</exception>
    public CudaKvCache(CudaContext context, int batch, int maxSequenceLength, int kvHeads, int headDim)
    {
        ArgumentNullException.ThrowIfNull(context);
        KernelElementTypes.Of<T>();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batch);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxSequenceLength);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(kvHeads);
        if (!KernelRegistry.DecodeHeadDims.Contains(headDim))
        {
            throw new ArgumentException($"head dim {headDim} has no GPU decode/append kernel; supported: {string.Join(", ", KernelRegistry.DecodeHeadDims)}.", nameof(headDim));
        }
        long pagesPerSequence = ((long)maxSequenceLength + PageSize - 1) / PageSize;
        long pages = (long)batch * kvHeads * pagesPerSequence;
        if (pages > int.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), maxSequenceLength,
                $"{batch} x {kvHeads} x {pagesPerSequence} pages of {PageSize} slots pass {int.MaxValue} pages.");
        }
        (Batch, MaxSequenceLength) = (batch, maxSequenceLength);
        TableStride = (int)pagesPerSequence;
        Capacity = (int)Math.Min(int.MaxValue, pagesPerSequence * PageSize);
        _lengths = new SequenceLengths(batch, maxSequenceLength);
        var table = new int[batch * pagesPerSequence];
        for (int b = 0; b < batch; b++)
        {
            for (int i = 0; i < pagesPerSequence; i++) table[b * pagesPerSequence + i] = (int)(b * kvHeads * pagesPerSequence + i);
        }
        Store = new DeviceKvStore<T>(context, pages * PageSize, PageSize, pagesPerSequence * PageSize * headDim, kvHeads, headDim);
        try
        {
            _tables = DeviceBuffer<int>.FromSpan(context, table);
        }
        catch
        {
            Store.Dispose();
            throw;
        }
    }

    /// <summary>Sequences B.</summary>
    public int Batch { get; }
    /// <summary>Tokens each sequence can hold.</summary>
    public int MaxSequenceLength { get; }
    /// <summary>KV heads (Hkv).</summary>
    public int KvHeads => Store.KvHeads;
    /// <summary>Features per head (D).</summary>
    public int HeadDim => Store.HeadDim;
    /// <summary>The context that owns the storage.</summary>
    public CudaContext Context => Store.Context;
    /// <summary>Tokens stored per sequence.</summary>
    public ReadOnlySpan<int> Lengths => _lengths.Values;
    /// <summary>Slots per sequence in storage (S): <see cref="MaxSequenceLength"/> rounded up to whole pages.</summary>
    public int Capacity { get; }
    /// <summary>Key storage, <c>[B, Hkv, S, D]</c> flat with S = <see cref="Capacity"/>.</summary>
    public DeviceBuffer<T> KeyStorage => Store.Keys;
    /// <summary>Value storage, <c>[B, Hkv, S, D]</c> flat.</summary>
    public DeviceBuffer<T> ValueStorage => Store.Values;

    internal DeviceKvStore<T> Store { get; }
    internal int TableStride { get; }
    internal nint Tables => _tables.DevicePointer;
    internal CudaStream DefaultStream => _defaultStream ??= CudaStream.Wrap(Context, 0);

    /// <summary>Appends the same number of new tokens to every sequence, in one launch.</summary>
    /// <param name="key">New keys <c>[B, n, Hkv, D]</c>, D contiguous, other strides and the address 16-byte aligned.</param>
    /// <param name="value">New values, same shape and strides as <paramref name="key"/>.</param>
    /// <param name="stream">Stream to queue on; null = the legacy default stream.</param>
    /// <exception cref="ArgumentNullException">A tensor is null.</exception>
    /// <exception cref="ArgumentException">Wrong shapes, strides or alignment, another context, or a sequence would pass
    /// <see cref="MaxSequenceLength"/> (message has the numbers); nothing is written.</exception>
    public void Append(DeviceTensor<T> key, DeviceTensor<T> value, CudaStream? stream = null)
    {
        var src = TokenSource.Require(key, value, Context, [Batch, -1, KvHeads, HeadDim], "[B, n, Hkv, D]");
        int n = (int)key.Lengths[1];
        RequireRoom(n, nameof(key));
        AppendCore(0, Batch, n, key, value, src, ragged: false, stream);
    }

    /// <summary>Appends new tokens to one sequence.</summary>
    /// <param name="sequence">Sequence index in [0, B).</param>
    /// <param name="key">New keys <c>[n, Hkv, D]</c>, D contiguous, other strides and the address 16-byte aligned.</param>
    /// <param name="value">New values, same shape and strides as <paramref name="key"/>.</param>
    /// <param name="stream">Stream to queue on; null = the legacy default stream.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sequence"/> is outside [0, B).</exception>
    /// <exception cref="ArgumentNullException">A tensor is null.</exception>
    /// <exception cref="ArgumentException">Wrong shapes, strides or alignment, another context, or the sequence would pass
    /// <see cref="MaxSequenceLength"/>; nothing is written.</exception>
    public void Append(int sequence, DeviceTensor<T> key, DeviceTensor<T> value, CudaStream? stream = null)
    {
        _lengths.RequireSequence(sequence);
        var src = TokenSource.Require(key, value, Context, [-1, KvHeads, HeadDim], "[n, Hkv, D]");
        int n = (int)key.Lengths[0];
        _lengths.RequireRoom(sequence, n, nameof(key));
        AppendCore(sequence, 1, n, key, value, src, ragged: true, stream);
    }

    /// <summary>Empties every sequence.</summary>
    public void Reset() => _lengths.Reset();

    /// <summary>Empties one sequence.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sequence"/> is outside [0, B).</exception>
    public void Reset(int sequence) => _lengths.Reset(sequence);

    /// <summary>Keeps the first <paramref name="length"/> tokens of a sequence.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The sequence is outside [0, B), or <paramref name="length"/> is outside [0, current length].</exception>
    public void Trim(int sequence, int length) => _lengths.Trim(sequence, length);

    /// <summary>Throws unless every sequence has room for <paramref name="tokens"/> more (checked before any work by the module too).</summary>
    internal void RequireRoom(int tokens, string paramName) => _lengths.RequireRoomAll(tokens, paramName);

    /// <summary>Frees the storage and the kernels' modules. Work queued on them must have finished.</summary>
    public void Dispose()
    {
        _tables.Dispose();
        Store.Dispose();
    }

    /// <summary>Appends n tokens to each of the <paramref name="count"/> sequences from <paramref name="first"/> on.</summary>
    private void AppendCore(int first, int count, int n, DeviceTensor<T> key, DeviceTensor<T> value, TokenSource src, bool ragged, CudaStream? stream)
    {
        stream ??= DefaultStream;
        Context.RequireSame(stream.Context, nameof(stream));
        if (n == 0) return;
        int ints = ContiguousAppendStaging.Ints(count);
        ContiguousAppendStaging.Pack(_lengths.Values.Slice(first, count), n, Store.Staging.Begin(ints, stream));
        nint device = Store.Staging.Upload(ints, stream);
        var (p, config) = KvAppendLaunch.Append(Store.Geometry, Store.Keys.DevicePointer, Store.Values.DevicePointer, key.DevicePointer, value.DevicePointer,
            src, ragged, count, count * n, Tables + (nint)first * TableStride * sizeof(int), TableStride,
            device, PagedAppendStaging.At(device, ContiguousAppendStaging.PositionsAt(count)));
        Store.Launch(p, config, stream);
        for (int i = 0; i < count; i++) _lengths.Advance(first + i, n);
    }
}
