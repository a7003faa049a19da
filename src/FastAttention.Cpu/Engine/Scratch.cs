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
    private nint[] _pointers = [];

    public static Scratch Current => t_current ??= new Scratch();

    /// <summary>Qᵀ panels <c>[parts, D, M]</c>.</summary>
    public float* Qt => Ptr(_qt);
    /// <summary>Scores / probabilities panel <c>[N, M]</c>.</summary>
    public float* St => Ptr(_st);
    /// <summary>Output accumulators <c>[parts, D, M]</c>.</summary>
    public float* Ot => Ptr(_ot);
    /// <summary>One row of D (or Sk for the fused softmax) floats.</summary>
    public float* Row => Ptr(_row);
    /// <summary>Per-column vectors: <c>[parts, 8, M]</c> floats (max, sum, lo, hi, block mask, ...).</summary>
    public float* Vec => Ptr(_vec);
    /// <summary>Per-column integers: <c>[parts, 2, M]</c> (query row, query head).</summary>
    public int* Cols => Ptr(_cols);
    /// <summary>Per-key-block flags: 2 x key blocks (kept by any column, kept by all).</summary>
    public bool[] Flags => _flags;
    /// <summary>Key tiles of the current query tiles, <c>[parts, maxTiles]</c>.</summary>
    public KeyTile* Tiles => Ptr(_tiles);
    /// <summary>Row pointers of the current decode block.</summary>
    public float** Pointers => (float**)Ptr(_pointers);

    public void EnsurePointers(int count) => Grow(ref _pointers, count);

    public void Ensure(int headDim, int m, int n, int rowLength, int keyBlocks, int maxTiles, int parts = 1)
    {
        Grow(ref _qt, parts * headDim * m);
        Grow(ref _st, n * m);
        Grow(ref _ot, parts * headDim * m);
        Grow(ref _row, Math.Max(headDim, rowLength));
        Grow(ref _vec, parts * 8 * m);
        Grow(ref _cols, parts * 2 * m);
        Grow(ref _tiles, parts * maxTiles);
        if (_flags.Length < 2 * keyBlocks) _flags = new bool[2 * keyBlocks];
    }

    private static void Grow<TElem>(ref TElem[] buffer, int length) where TElem : unmanaged
    {
        if (buffer.Length < length)
        {
            buffer = GC.AllocateUninitializedArray<TElem>(length, pinned: true);
        }
    }

    private static TElem* Ptr<TElem>(TElem[] pinned) where TElem : unmanaged =>
        (TElem*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(pinned));
}

/// <summary>A key tile <c>[Start, End)</c> and whether it needs element-wise range or block masking.</summary>
internal record struct KeyTile(int Start, int End, bool RangeMask, bool BlockMask);
