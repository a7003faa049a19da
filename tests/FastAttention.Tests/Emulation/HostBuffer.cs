// Host memory standing in for device memory in emulated launches: 256-byte aligned (cp.async needs 16), with
// guard zones before and after the data filled with a canary pattern that Check() verifies after a launch, so an
// out-of-bounds write by a kernel is reported instead of silently corrupting the heap.
using System.Runtime.InteropServices;

namespace FastAttention.Tests.Emulation;

/// <summary>An aligned, guarded native array of <typeparamref name="T"/>.</summary>
internal sealed unsafe class HostBuffer<T> : IDisposable where T : unmanaged
{
    /// <summary>Bytes of each guard zone.</summary>
    public const int GuardBytes = 256;
    private const byte Canary = 0xA5;
    private byte* _block;

    public HostBuffer(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Length = length;
        nuint data = (nuint)length * (nuint)sizeof(T);
        _block = (byte*)NativeMemory.AlignedAlloc(data + 2 * GuardBytes, 256);
        new Span<byte>(_block, GuardBytes).Fill(Canary);
        new Span<byte>(_block + GuardBytes + data, GuardBytes).Fill(Canary);
        Span.Clear();
    }

    public HostBuffer(ReadOnlySpan<T> values) : this(values.Length) => values.CopyTo(Span);

    public int Length { get; }

    /// <summary>The data (between the guards).</summary>
    public Span<T> Span => new(Data, Length);

    /// <summary>The address to pass as a kernel argument.</summary>
    public nint Pointer => (nint)Data;

    private T* Data
    {
        get
        {
            ObjectDisposedException.ThrowIf(_block is null, this);
            return (T*)(_block + GuardBytes);
        }
    }

    public T[] ToArray() => Span.ToArray();

    /// <summary>Fills the data with a byte pattern (0xFF: NaN in fp32, fp16 and bf16), to show that a kernel writes every element it should.</summary>
    public void Poison(byte pattern = 0xFF) => MemoryMarshal.AsBytes(Span).Fill(pattern);

    /// <summary>Fails the test when a guard zone was written.</summary>
    public void Check(string name)
    {
        nuint data = (nuint)Length * (nuint)sizeof(T);
        int before = new ReadOnlySpan<byte>(_block, GuardBytes).IndexOfAnyExcept(Canary);
        int after = new ReadOnlySpan<byte>(_block + GuardBytes + data, GuardBytes).IndexOfAnyExcept(Canary);
        Assert.That(before, Is.EqualTo(-1), $"{name}: a kernel wrote {GuardBytes - before} bytes before the start of the buffer");
        Assert.That(after, Is.EqualTo(-1), $"{name}: a kernel wrote {after} bytes past the end of the buffer of {Length} elements");
    }

    public void Dispose()
    {
        if (_block is not null)
        {
            NativeMemory.AlignedFree(_block);
            _block = null;
        }
    }
}
