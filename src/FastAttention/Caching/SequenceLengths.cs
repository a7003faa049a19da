// Per-sequence token counts of a contiguous KV cache, shared by the CPU and GPU caches: index and room checks
// (thrown before any work), reset, trim and the count update after an append.

namespace FastAttention.Caching;

/// <summary>Token counts of <see cref="Batch"/> sequences, each at most <see cref="Capacity"/>.</summary>
internal sealed class SequenceLengths(int batch, int capacity)
{
    private readonly int[] _lengths = new int[batch];

    /// <summary>Sequences B.</summary>
    public int Batch => _lengths.Length;

    /// <summary>Tokens one sequence can hold (the cache's MaxSequenceLength).</summary>
    public int Capacity { get; } = capacity;

    /// <summary>Current length of every sequence.</summary>
    public ReadOnlySpan<int> Values => _lengths;

    /// <summary>Current length of one sequence.</summary>
    public int this[int sequence] => _lengths[sequence];

    /// <summary>Throws unless <paramref name="sequence"/> is in [0, B).</summary>
    /// <exception cref="ArgumentOutOfRangeException">It is not.</exception>
    public void RequireSequence(int sequence)
    {
        if ((uint)sequence >= (uint)Batch)
        {
            throw new ArgumentOutOfRangeException(nameof(sequence), sequence, $"sequence must be in [0, {Batch}).");
        }
    }

    /// <summary>Throws unless <paramref name="sequence"/> has room for <paramref name="tokens"/> more.</summary>
    /// <exception cref="ArgumentException">It has not (message has the numbers; <paramref name="paramName"/> names the argument).</exception>
    public void RequireRoom(int sequence, int tokens, string paramName)
    {
        if ((long)_lengths[sequence] + tokens > Capacity)
        {
            throw new ArgumentException(
                $"Appending {tokens} tokens to sequence {sequence} (length {_lengths[sequence]}) would pass MaxSequenceLength {Capacity}. Nothing was appended.",
                paramName);
        }
    }

    /// <summary>Throws unless every sequence has room for <paramref name="tokens"/> more.</summary>
    /// <exception cref="ArgumentException">One has not.</exception>
    public void RequireRoomAll(int tokens, string paramName)
    {
        for (int b = 0; b < Batch; b++) RequireRoom(b, tokens, paramName);
    }

    /// <summary>Counts <paramref name="tokens"/> appended to <paramref name="sequence"/> (room already checked).</summary>
    public void Advance(int sequence, int tokens) => _lengths[sequence] += tokens;

    /// <summary>Empties every sequence.</summary>
    public void Reset() => Array.Clear(_lengths);

    /// <summary>Empties one sequence.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sequence"/> is outside [0, B).</exception>
    public void Reset(int sequence)
    {
        RequireSequence(sequence);
        _lengths[sequence] = 0;
    }

    /// <summary>Keeps the first <paramref name="length"/> tokens of a sequence.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The sequence is outside [0, B), or <paramref name="length"/> is outside [0, current length].</exception>
    public void Trim(int sequence, int length)
    {
        RequireSequence(sequence);
        if ((uint)length > (uint)_lengths[sequence])
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"length must be in [0, {_lengths[sequence]}] for sequence {sequence}.");
        }
        _lengths[sequence] = length;
    }
}
