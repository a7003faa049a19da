// Per-thread pinned pack buffers of the sgemm, reused across calls (grown on demand, never shrunk).
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FastAttention.Cpu.Gemm;

/// <summary>
/// Pack buffers of one thread. The calling thread's <see cref="APack"/> holds the shared A block of a
/// call (every worker reads it); each worker's <see cref="BPack"/> holds its own L2-sized B block and
/// <see cref="Tile"/> one edge tile of C. Buffers are pinned and 64-byte aligned.
/// </summary>
internal sealed unsafe class GemmBuffers
{
    [ThreadStatic] private static GemmBuffers? t_current;

    private float[] _a = [], _b = [], _tile = [];

    /// <summary>This thread's buffers.</summary>
    public static GemmBuffers Current => t_current ??= new GemmBuffers();

    /// <summary>A block, at least as many floats as the last <see cref="EnsureA"/> asked for.</summary>
    public float* APack => Aligned(_a);

    /// <summary>B block, at least as many floats as the last <see cref="EnsureB"/> asked for.</summary>
    public float* BPack => Aligned(_b);

    /// <summary>One <c>[MR, NR]</c> tile of C for partial panels.</summary>
    public float* Tile => Aligned(_tile);

    public void EnsureA(long floats) => Grow(ref _a, floats);

    public void EnsureB(long floats) => Grow(ref _b, floats);

    public void EnsureTile(int floats) => Grow(ref _tile, floats);

    private const int AlignFloats = 16;

    private static void Grow(ref float[] buffer, long floats)
    {
        long need = checked(floats + AlignFloats);
        if (buffer.Length < need)
        {
            buffer = GC.AllocateUninitializedArray<float>(checked((int)need), pinned: true);
        }
    }

    private static float* Aligned(float[] pinned)
    {
        nint p = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned));
        return (float*)((p + 63) & ~(nint)63);
    }
}
