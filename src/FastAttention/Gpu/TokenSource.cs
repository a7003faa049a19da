// Validation of the new-token tensors a device cache append reads: shape, D contiguous, 16-byte aligned rows.
using FastAttention.Runtime;

namespace FastAttention.Gpu;

/// <summary>Element strides of validated key/value token tensors (the kernel reads keys and values with the same strides).</summary>
internal readonly record struct TokenSource(long EntryStride, long TokenStride, long HeadStride)
{
    /// <summary>
    /// Checks <paramref name="key"/> and <paramref name="value"/> against <paramref name="expected"/> lengths (-1 = any),
    /// rank 4 <c>[B, n, Hkv, D]</c> or rank 3 <c>[N, Hkv, D]</c>: same context, same lengths and strides, D contiguous,
    /// every other stride and the address a multiple of 16 bytes (the kernel moves rows in 16-byte vectors).
    /// </summary>
    /// <exception cref="ArgumentNullException">A tensor is null.</exception>
    /// <exception cref="ArgumentException">Any of the above does not hold.</exception>
    public static TokenSource Require<T>(DeviceTensor<T> key, DeviceTensor<T> value, CudaContext context, long[] expected, string layout)
        where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        context.RequireSame(key.Context, nameof(key));
        context.RequireSame(value.Context, nameof(value));
        RequireShape(key, expected, layout, nameof(key));
        if (!key.Lengths.SequenceEqual(value.Lengths) || !key.Strides.SequenceEqual(value.Strides))
        {
            throw new ArgumentException($"value {value} must have the lengths and strides of key {key}.", nameof(value));
        }
        int vec = 16 / System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        RequireVectorRows(key, vec, nameof(key));
        RequireVectorRows(value, vec, nameof(value));
        var s = key.Strides;
        return key.Rank == 4 ? new TokenSource(s[0], s[1], s[2]) : new TokenSource(0, s[0], s[1]);
    }

    /// <summary>Rank and lengths against <paramref name="expected"/> (-1 = any length).</summary>
    /// <exception cref="ArgumentException">They differ.</exception>
    public static void RequireShape<T>(DeviceTensor<T> tensor, long[] expected, string layout, string paramName) where T : unmanaged
    {
        bool ok = tensor.Rank == expected.Length;
        for (int i = 0; ok && i < expected.Length; i++) ok = expected[i] < 0 || tensor.Lengths[i] == expected[i];
        if (!ok)
        {
            throw new ArgumentException(
                $"{paramName} is [{string.Join(", ", tensor.Lengths.ToArray())}]; expected {layout} = [{string.Join(", ", expected.Select(e => e < 0 ? "any" : e.ToString(System.Globalization.CultureInfo.InvariantCulture)))}].",
                paramName);
        }
    }

    /// <summary>D (last axis) contiguous; every other stride of a non-trivial axis and the address 16-byte aligned.</summary>
    /// <exception cref="ArgumentException">They are not.</exception>
    public static void RequireVectorRows<T>(DeviceTensor<T> tensor, int vec, string paramName) where T : unmanaged
    {
        int last = tensor.Rank - 1;
        if (tensor.Strides[last] != 1 && tensor.Lengths[last] > 1)
        {
            throw new ArgumentException($"{paramName} {tensor}: the last (D) axis must have stride 1, got {tensor.Strides[last]}.", paramName);
        }
        for (int i = 0; i < last; i++)
        {
            if (tensor.Lengths[i] > 1 && tensor.Strides[i] % vec != 0)
            {
                throw new ArgumentException(
                    $"{paramName} {tensor}: stride {tensor.Strides[i]} of axis {i} is not a multiple of {vec} elements (16 bytes); rows are moved in 16-byte vectors.", paramName);
            }
        }
        if (tensor.ElementCount > 0 && tensor.DevicePointer % 16 != 0)
        {
            throw new ArgumentException($"{paramName} starts at 0x{tensor.DevicePointer:x}, which is not 16-byte aligned.", paramName);
        }
    }
}
