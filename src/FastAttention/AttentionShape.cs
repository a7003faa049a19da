// Shape of an attention call and the argument checks every backend runs before any work.
using System.Numerics.Tensors;

namespace FastAttention;

/// <summary>
/// Sizes of one attention call: Q <c>[Batch, QueryLength, Heads, HeadDim]</c>,
/// K/V <c>[Batch, KeyLength, KvHeads, HeadDim]</c>.
/// </summary>
/// <param name="Batch">Sequences in the batch (B).</param>
/// <param name="QueryLength">Query positions per sequence (Sq).</param>
/// <param name="KeyLength">Key/value positions per sequence (Sk).</param>
/// <param name="Heads">Query heads (H).</param>
/// <param name="KvHeads">Key/value heads (Hkv); H % Hkv == 0.</param>
/// <param name="HeadDim">Features per head (D).</param>
public readonly record struct AttentionShape(int Batch, int QueryLength, int KeyLength, int Heads, int KvHeads, int HeadDim)
{
    /// <summary>Query heads that share one key/value head (H / Hkv).</summary>
    public int GroupSize => Heads / KvHeads;

    /// <summary>Forward FLOPs as FlashAttention counts them: 4·B·H·Sq·Sk·D, halved for causal.</summary>
    public double Flops(bool causal) => 4.0 * Batch * Heads * QueryLength * KeyLength * HeadDim * (causal ? 0.5 : 1.0);

    /// <summary>
    /// Reads and checks the shape of Q, K and V: ranks, matching batch/length/head-dim, H % Hkv == 0,
    /// no zero-size dimension.
    /// </summary>
    /// <exception cref="ArgumentException">A tensor has the wrong rank or inconsistent sizes (the message names it and the numbers).</exception>
    public static AttentionShape FromTensors<T>(ReadOnlyTensorSpan<T> query, ReadOnlyTensorSpan<T> key, ReadOnlyTensorSpan<T> value) =>
        FromLengths(query.Lengths, key.Lengths, value.Lengths);

    /// <summary>
    /// <see cref="FromTensors{T}"/>'s checks and messages on the lengths of Q, K and V alone (also used for device
    /// tensors by the GPU planner).
    /// </summary>
    /// <exception cref="ArgumentException">A tensor has the wrong rank or inconsistent sizes.</exception>
    internal static AttentionShape FromLengths(ReadOnlySpan<nint> q, ReadOnlySpan<nint> k, ReadOnlySpan<nint> v)
    {
        RequireRank(q, 4, "query", "[B, Sq, H, D]");
        RequireRank(k, 4, "key", "[B, Sk, Hkv, D]");
        RequireRank(v, 4, "value", "[B, Sk, Hkv, D]");
        for (int i = 0; i < 4; i++)
        {
            RequirePositive(q[i], "query", i);
            RequirePositive(k[i], "key", i);
            RequirePositive(v[i], "value", i);
        }
        if (!k.SequenceEqual(v))
        {
            throw new ArgumentException($"value lengths [{Join(v)}] must equal key lengths [{Join(k)}].", "value");
        }
        if (k[0] != q[0])
        {
            throw new ArgumentException($"key batch {k[0]} must equal query batch {q[0]}.", "key");
        }
        if (k[3] != q[3])
        {
            throw new ArgumentException($"key head dim {k[3]} must equal query head dim {q[3]}.", "key");
        }
        if (q[2] % k[2] != 0)
        {
            throw new ArgumentException(
                $"query heads {q[2]} must be a multiple of key/value heads {k[2]} (GQA/MQA need H % Hkv == 0).", "key");
        }
        foreach (nint n in q) RequireInt(n, "query");
        foreach (nint n in k) RequireInt(n, "key");
        return new AttentionShape((int)q[0], (int)q[1], (int)k[1], (int)q[2], (int)k[2], (int)q[3]);
    }

    /// <summary>Checks an output tensor: exact lengths and no overlapping elements from zero strides.</summary>
    /// <exception cref="ArgumentException">Lengths differ from <paramref name="expected"/>, or a stride of 0 on a dimension longer than 1.</exception>
    public static void RequireDestination<T>(TensorSpan<T> destination, ReadOnlySpan<nint> expected, string paramName, string layout) =>
        RequireDestination(destination.Lengths, destination.Strides, expected, paramName, layout);

    /// <summary><see cref="RequireDestination{T}"/>'s rule on lengths and strides alone (also used for device tensors).</summary>
    /// <exception cref="ArgumentException">Lengths differ from <paramref name="expected"/>, or a stride of 0 on a dimension longer than 1.</exception>
    internal static void RequireDestination(ReadOnlySpan<nint> lengths, ReadOnlySpan<nint> strides, ReadOnlySpan<nint> expected, string paramName, string layout)
    {
        if (!lengths.SequenceEqual(expected))
        {
            throw new ArgumentException(
                $"{paramName} must have lengths [{Join(expected)}] ({layout}), got [{Join(lengths)}].", paramName);
        }
        for (int i = 0; i < expected.Length; i++)
        {
            if (strides[i] == 0 && expected[i] > 1)
            {
                throw new ArgumentException(
                    $"{paramName} has stride 0 on dimension {i} of length {expected[i]}: outputs must not overlap.", paramName);
            }
        }
    }

    /// <summary>Checks the mask against this shape: lengths arrays, block layout geometry.</summary>
    /// <exception cref="ArgumentException">The mask does not fit the shape (the message names the field and the numbers).</exception>
    public void RequireMaskFits(AttentionMask mask, string paramName)
    {
        RequireLengths(mask.KeyLengths, KeyLength, "KeyLengths", "Sk", paramName);
        RequireLengths(mask.QueryLengths, QueryLength, "QueryLengths", "Sq", paramName);
        if (mask.BlockMask is { } bm)
        {
            int qBlocks = (QueryLength + bm.BlockSizeQ - 1) / bm.BlockSizeQ;
            int kBlocks = (KeyLength + bm.BlockSizeK - 1) / bm.BlockSizeK;
            if (bm.Heads != 1 && bm.Heads != Heads)
            {
                throw new ArgumentException($"BlockMask has {bm.Heads} heads; expected 1 or H = {Heads}.", paramName);
            }
            if (bm.QueryBlocks != qBlocks || bm.KeyBlocks != kBlocks)
            {
                throw new ArgumentException(
                    $"BlockMask is [{bm.QueryBlocks} x {bm.KeyBlocks}] blocks of {bm.BlockSizeQ} x {bm.BlockSizeK}, but Sq = {QueryLength} " +
                    $"and Sk = {KeyLength} need ceil(Sq/{bm.BlockSizeQ}) = {qBlocks} x ceil(Sk/{bm.BlockSizeK}) = {kBlocks}.", paramName);
            }
        }
    }

    private void RequireLengths(int[]? lengths, int max, string field, string axis, string paramName)
    {
        if (lengths is null) return;
        if (lengths.Length != Batch)
        {
            throw new ArgumentException($"{field} has {lengths.Length} entries; expected B = {Batch}.", paramName);
        }
        for (int b = 0; b < lengths.Length; b++)
        {
            if ((uint)lengths[b] > (uint)max)
            {
                throw new ArgumentException($"{field}[{b}] = {lengths[b]} is outside [0, {axis} = {max}].", paramName);
            }
        }
    }

    private static void RequireRank(ReadOnlySpan<nint> lengths, int rank, string name, string layout)
    {
        if (lengths.Length != rank)
        {
            throw new ArgumentException($"{name} must be rank {rank} {layout}, got rank {lengths.Length} [{Join(lengths)}].", name);
        }
    }

    private static void RequirePositive(nint n, string name, int dim)
    {
        if (n <= 0)
        {
            throw new ArgumentException($"{name} dimension {dim} has size {n}; every dimension must be at least 1.", name);
        }
    }

    private static void RequireInt(nint n, string name)
    {
        if (n > int.MaxValue)
        {
            throw new ArgumentException($"{name} dimension {n} exceeds {int.MaxValue}.", name);
        }
    }

    internal static string Join(ReadOnlySpan<nint> lengths) => string.Join(", ", lengths.ToArray());
}
