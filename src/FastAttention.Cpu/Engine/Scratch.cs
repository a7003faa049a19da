// Per-thread scratch memory of the CPU engine, reused across calls (no per-call Sq x Sk allocation).

namespace FastAttention.Cpu.Engine;

/// <summary>Pinned per-thread buffers sized by tile dimensions only; grown on demand, never shrunk.</summary>
internal sealed unsafe class Scratch
{
    [ThreadStatic] private static Scratch? t_current;

    private float[] _qt = [], _st = [], _ot = [], _row = [], _vec = [];
    private int[] _cols = [];
    private bool[] _flags = [];
    private KeyTile[] _tiles = [];

    public static Scratch Current => t_current ??= new Scratch();

    /// <summary>Qᵀ panel <c>[D, M]</c>.</summary>
    public float* Qt => Ptr(_qt);
    /// <summary>Scores / probabilities panel <c>[N, M]</c>.</summary>
    public float* St => Ptr(_st);
    /// <summary>Output accumulator <c>[D, M]</c>.</summary>
    public float* Ot => Ptr(_ot);
    /// <summary>One row of D (or Sk for the fused softmax) floats.</summary>
    public float* Row => Ptr(_row);
    /// <summary>Per-column vectors: 8 x M floats (m, l, lo, hi, block mask, lse, ...).</summary>
    public float* Vec => Ptr(_vec);
    /// <summary>Per-column integers: 2 x M (query row, head).</summary>
    public int[] Cols => _cols;
    /// <summary>Per-key-block flags: 2 x key blocks (kept by any column, kept by all).</summary>
    public bool[] Flags => _flags;
    /// <summary>Key tiles of the current query tile.</summary>
    public KeyTile[] Tiles => _tiles;

    public void Ensure(int headDim, int m, int n, int rowLength, int keyBlocks, int maxTiles)
    {
        Grow(ref _qt, headDim * m);
        Grow(ref _st, n * m);
        Grow(ref _ot, headDim * m);
        Grow(ref _row, Math.Max(headDim, rowLength));
        Grow(ref _vec, 8 * m);
        if (_cols.Length < 2 * m) _cols = new int[2 * m];
        if (_flags.Length < 2 * keyBlocks) _flags = new bool[2 * keyBlocks];
        if (_tiles.Length < maxTiles) _tiles = new KeyTile[maxTiles];
    }

    private static void Grow(ref float[] buffer, int length)
    {
        if (buffer.Length < length)
        {
            buffer = GC.AllocateUninitializedArray<float>(length, pinned: true);
        }
    }

    private static float* Ptr(float[] pinned) =>
        (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(pinned));
}

/// <summary>A key tile <c>[Start, End)</c> and whether it needs element-wise range or block masking.</summary>
internal record struct KeyTile(int Start, int End, bool RangeMask, bool BlockMask);
