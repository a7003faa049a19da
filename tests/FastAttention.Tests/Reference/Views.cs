// Tensor views over test arrays: BSHD contiguous, BHSD memory viewed as BSHD, [B,H,Sq] and [B,H,Sq,Sk].
//
// System.Numerics.Tensors 10.x rejects a non-zero stride on a dimension of length 1 ("The provided
// lengths and strides would allow you to access elements outside the provided memory"), so these
// helpers give such dimensions stride 0 (the stride of a length-1 dimension is never used).
// TensorLayouts in the library does not do this yet; see Types/TensorLayoutsTests.

namespace FastAttention.Tests.Reference;

internal static class Views
{
    public static TensorSpan<T> Strided<T>(T[] data, nint[] lengths, nint[] strides)
    {
        var s = (nint[])strides.Clone();
        for (int i = 0; i < s.Length; i++)
        {
            if (lengths[i] == 1) s[i] = 0;
        }
        return new TensorSpan<T>(data, lengths, s);
    }

    /// <summary>
    /// A non-contiguous copy of <paramref name="logical"/> (row-major over <paramref name="lengths"/>):
    /// axes are laid out in memory in <paramref name="memoryOrder"/> (outermost first), the innermost
    /// with stride <paramref name="innerStep"/>, each outer stride padded by <paramref name="pad"/>
    /// elements; every gap holds <paramref name="filler"/>. A tensor with a zero-length axis gets an
    /// empty array and all-zero strides (what System.Numerics.Tensors 10 accepts).
    /// </summary>
    public static TensorSpan<T> Scattered<T>(T[] logical, int[] lengths, int[] memoryOrder, int innerStep, int pad, T filler, out T[] storage)
    {
        int rank = lengths.Length;
        var l = lengths.Select(x => (nint)x).ToArray();
        if (lengths.Any(x => x == 0))
        {
            storage = [];
            return new TensorSpan<T>(storage, l, new nint[rank]);
        }
        var strides = new nint[rank];
        nint stride = innerStep;
        for (int k = rank - 1; k >= 0; k--)
        {
            int axis = memoryOrder[k];
            strides[axis] = stride;
            stride = stride * lengths[axis] + pad;
        }
        nint size = 1;
        for (int a = 0; a < rank; a++) size += (lengths[a] - 1) * strides[a];
        storage = new T[size];
        Array.Fill(storage, filler);
        var idx = new int[rank];
        for (int flat = 0; flat < logical.Length; flat++)
        {
            nint offset = 0;
            for (int a = 0; a < rank; a++) offset += idx[a] * strides[a];
            storage[offset] = logical[flat];
            for (int a = rank - 1; a >= 0 && ++idx[a] == lengths[a]; a--) idx[a] = 0;
        }
        return Strided(storage, l, strides);
    }

    /// <summary>Contiguous <c>[B, S, H, D]</c>.</summary>
    public static TensorSpan<T> Bshd<T>(T[] data, int b, int s, int h, int d) =>
        Strided(data, [b, s, h, d], [(nint)s * h * d, (nint)h * d, d, 1]);

    /// <summary><c>[B, S, H, D]</c> view of memory laid out <c>[B, H, S, D]</c>.</summary>
    public static TensorSpan<T> BhsdAsBshd<T>(T[] data, int b, int s, int h, int d) =>
        Strided(data, [b, s, h, d], [(nint)h * s * d, d, (nint)s * d, 1]);

    /// <summary>Contiguous <c>[B, H, S]</c> (log-sum-exp).</summary>
    public static TensorSpan<float> Bhs(float[] data, int b, int h, int s) =>
        Strided(data, [b, h, s], [(nint)h * s, s, 1]);

    /// <summary>Contiguous <c>[B, H, Sq, Sk]</c> (probabilities, scores).</summary>
    public static TensorSpan<T> Bhqk<T>(T[] data, int b, int h, int sq, int sk) =>
        Strided(data, [b, h, sq, sk], [(nint)h * sq * sk, (nint)sq * sk, sk, 1]);

    /// <summary>Index of <c>[b, s, h, d]</c> in BHSD memory.</summary>
    public static int BhsdIndex(int b, int s, int h, int d, int S, int H, int D) => ((b * H + h) * S + s) * D + d;

    /// <summary>Index of <c>[b, s, h, d]</c> in BSHD memory.</summary>
    public static int BshdIndex(int b, int s, int h, int d, int S, int H, int D) => ((b * S + s) * H + h) * D + d;

    /// <summary>Copies BSHD-ordered values into BHSD order.</summary>
    public static T[] BshdToBhsd<T>(T[] bshd, int B, int S, int H, int D)
    {
        var r = new T[bshd.Length];
        for (int b = 0; b < B; b++)
            for (int s = 0; s < S; s++)
                for (int h = 0; h < H; h++)
                    for (int d = 0; d < D; d++)
                        r[BhsdIndex(b, s, h, d, S, H, D)] = bshd[BshdIndex(b, s, h, d, S, H, D)];
        return r;
    }

    /// <summary>Copies BHSD-ordered values into BSHD order.</summary>
    public static T[] BhsdToBshd<T>(T[] bhsd, int B, int S, int H, int D)
    {
        var r = new T[bhsd.Length];
        for (int b = 0; b < B; b++)
            for (int s = 0; s < S; s++)
                for (int h = 0; h < H; h++)
                    for (int d = 0; d < D; d++)
                        r[BshdIndex(b, s, h, d, S, H, D)] = bhsd[BhsdIndex(b, s, h, d, S, H, D)];
        return r;
    }
}
