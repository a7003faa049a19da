// BFloat16: the upper 16 bits of an IEEE-754 binary32, with round-to-nearest-even conversion.
using System.Globalization;
using System.Runtime.CompilerServices;

namespace FastAttention;

/// <summary>
/// A 16-bit brain floating-point number: sign, 8 exponent bits and 7 mantissa bits, i.e. the upper
/// half of a <see cref="float"/>. Conversion from <see cref="float"/> rounds to nearest, ties to even;
/// NaN stays NaN (quiet). Arithmetic is done by converting to <see cref="float"/>.
/// </summary>
public readonly struct BFloat16 : IEquatable<BFloat16>, IComparable<BFloat16>, IComparable, IFormattable
{
    private readonly ushort _bits;

    private BFloat16(ushort bits) => _bits = bits;

    /// <summary>The raw 16-bit pattern.</summary>
    public ushort RawValue => _bits;

    /// <summary>Creates a value from its raw 16-bit pattern.</summary>
    public static BFloat16 FromRawValue(ushort bits) => new(bits);

    /// <summary>Positive zero.</summary>
    public static BFloat16 Zero => new(0);
    /// <summary>One.</summary>
    public static BFloat16 One => new(0x3F80);
    /// <summary>Positive infinity.</summary>
    public static BFloat16 PositiveInfinity => new(0x7F80);
    /// <summary>Negative infinity.</summary>
    public static BFloat16 NegativeInfinity => new(0xFF80);
    /// <summary>A quiet NaN.</summary>
    public static BFloat16 NaN => new(0x7FC0);
    /// <summary>Largest finite value (about 3.39e38).</summary>
    public static BFloat16 MaxValue => new(0x7F7F);
    /// <summary>Smallest finite value.</summary>
    public static BFloat16 MinValue => new(0xFF7F);
    /// <summary>Smallest positive value (a subnormal, 2^-133), as <see cref="float.Epsilon"/> and <see cref="Half.Epsilon"/>.</summary>
    public static BFloat16 Epsilon => new(0x0001);
    /// <summary>Difference between 1 and the next representable value (2^-7).</summary>
    public static BFloat16 MachineEpsilon => new(0x3C00);

    /// <summary>True when the value is NaN.</summary>
    public static bool IsNaN(BFloat16 value) => (value._bits & 0x7FFF) > 0x7F80;
    /// <summary>True when the value is positive or negative infinity.</summary>
    public static bool IsInfinity(BFloat16 value) => (value._bits & 0x7FFF) == 0x7F80;
    /// <summary>True when the value is neither NaN nor infinite.</summary>
    public static bool IsFinite(BFloat16 value) => (value._bits & 0x7F80) != 0x7F80;

    /// <summary>Converts a <see cref="float"/> to the nearest <see cref="BFloat16"/> (ties to even).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static explicit operator BFloat16(float value) => new(RoundToBits(value));

    /// <summary>Converts a <see cref="double"/> through <see cref="float"/>.</summary>
    public static explicit operator BFloat16(double value) => (BFloat16)(float)value;

    /// <summary>Widens to <see cref="float"/> exactly.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static implicit operator float(BFloat16 value) => BitConverter.Int32BitsToSingle(value._bits << 16);

    /// <summary>Widens to <see cref="double"/> exactly.</summary>
    public static implicit operator double(BFloat16 value) => (float)value;

    /// <summary>The round-to-nearest-even bit pattern of <paramref name="value"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort RoundToBits(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if ((bits & 0x7FFF_FFFF) > 0x7F80_0000)
        {
            return (ushort)((bits >> 16) | 0x0040); // quiet NaN, sign kept
        }
        uint lsb = (bits >> 16) & 1;
        return (ushort)((bits + 0x7FFF + lsb) >> 16);
    }

    /// <summary>Equality as <see cref="float.Equals(float)"/>: NaN equals NaN, +0 equals -0 (consistent with <see cref="CompareTo(BFloat16)"/> and hashing).</summary>
    public bool Equals(BFloat16 other) => ((float)this).Equals((float)other);
    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is BFloat16 other && Equals(other);
    /// <inheritdoc/>
    public override int GetHashCode() => ((float)this).GetHashCode();
    /// <inheritdoc/>
    public int CompareTo(BFloat16 other) => ((float)this).CompareTo((float)other);
    /// <inheritdoc/>
    /// <exception cref="ArgumentException"><paramref name="obj"/> is not a <see cref="BFloat16"/>.</exception>
    public int CompareTo(object? obj) => obj switch
    {
        null => 1,
        BFloat16 other => CompareTo(other),
        _ => throw new ArgumentException($"Object must be of type {nameof(BFloat16)}, not {obj.GetType().Name}.", nameof(obj)),
    };

    /// <summary>Equality as floating-point values (NaN != NaN, +0 == -0).</summary>
    public static bool operator ==(BFloat16 left, BFloat16 right) => (float)left == (float)right;
    /// <summary>Inequality as floating-point values (NaN != NaN).</summary>
    public static bool operator !=(BFloat16 left, BFloat16 right) => (float)left != (float)right;
    /// <summary>Less than, as floating-point values.</summary>
    public static bool operator <(BFloat16 left, BFloat16 right) => (float)left < (float)right;
    /// <summary>Greater than, as floating-point values.</summary>
    public static bool operator >(BFloat16 left, BFloat16 right) => (float)left > (float)right;
    /// <summary>Less than or equal, as floating-point values.</summary>
    public static bool operator <=(BFloat16 left, BFloat16 right) => (float)left <= (float)right;
    /// <summary>Greater than or equal, as floating-point values.</summary>
    public static bool operator >=(BFloat16 left, BFloat16 right) => (float)left >= (float)right;

    /// <inheritdoc/>
    public override string ToString() => ((float)this).ToString(CultureInfo.InvariantCulture);
    /// <inheritdoc/>
    public string ToString(string? format, IFormatProvider? formatProvider) => ((float)this).ToString(format, formatProvider);
}
