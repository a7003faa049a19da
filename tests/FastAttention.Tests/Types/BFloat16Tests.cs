// BFloat16: round-to-nearest-even conversion, NaN and infinities, exact widening, comparisons.
using System.Globalization;

namespace FastAttention.Tests.Types;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class BFloat16Tests
{
    private static ushort Bits(float f) => ((BFloat16)f).RawValue;
    private static float FromBits(uint bits) => BitConverter.UInt32BitsToSingle(bits);

    [TestCase(0x3F80_0000u, (ushort)0x3F80, TestName = "1.0 exact")]
    [TestCase(0x3F80_7FFFu, (ushort)0x3F80, TestName = "just below a tie rounds down")]
    [TestCase(0x3F80_8000u, (ushort)0x3F80, TestName = "tie with even lower neighbour rounds down")]
    [TestCase(0x3F80_8001u, (ushort)0x3F81, TestName = "just above a tie rounds up")]
    [TestCase(0x3F81_8000u, (ushort)0x3F82, TestName = "tie with odd lower neighbour rounds up to even")]
    [TestCase(0x3F81_7FFFu, (ushort)0x3F81, TestName = "below tie, odd lower neighbour")]
    [TestCase(0xBF80_8000u, (ushort)0xBF80, TestName = "negative tie to even")]
    [TestCase(0xBF81_8000u, (ushort)0xBF82, TestName = "negative tie to even upward in magnitude")]
    [TestCase(0x3FFF_8000u, (ushort)0x4000, TestName = "tie carries into the exponent")]
    [TestCase(0x0000_8000u, (ushort)0x0000, TestName = "subnormal tie to even zero")]
    [TestCase(0x0001_8000u, (ushort)0x0002, TestName = "subnormal tie to even")]
    [TestCase(0x0000_0001u, (ushort)0x0000, TestName = "smallest float subnormal rounds to zero")]
    [TestCase(0x8000_0000u, (ushort)0x8000, TestName = "negative zero keeps its sign")]
    [TestCase(0x7F7F_7FFFu, (ushort)0x7F7F, TestName = "just below the overflow tie stays MaxValue")]
    [TestCase(0x7F7F_8000u, (ushort)0x7F80, TestName = "overflow tie rounds to infinity")]
    [TestCase(0x7F7F_FFFFu, (ushort)0x7F80, TestName = "float MaxValue overflows to infinity")]
    [TestCase(0xFF7F_FFFFu, (ushort)0xFF80, TestName = "float MinValue overflows to negative infinity")]
    [TestCase(0x7F80_0000u, (ushort)0x7F80, TestName = "positive infinity")]
    [TestCase(0xFF80_0000u, (ushort)0xFF80, TestName = "negative infinity")]
    public void RoundsToNearestEven(uint floatBits, ushort expected) =>
        Assert.That(Bits(FromBits(floatBits)), Is.EqualTo(expected), $"0x{floatBits:X8}");

    [Test]
    public void RoundingMatchesDoubleArithmeticOnRandomInputs()
    {
        // Independent check: the nearest bf16 is found by comparing distances in double.
        var rng = new Reference.Rng(77);
        for (int n = 0; n < 200_000; n++)
        {
            uint bits = (uint)rng.NextULong();
            float f = FromBits(bits);
            if (!float.IsFinite(f)) continue;
            uint lo = bits & 0xFFFF_0000u;   // truncated toward zero
            uint hi = lo + 0x1_0000u;         // next value away from zero (2^128 when that is infinity)
            double vLo = FromBits(lo);
            double vHi = float.IsInfinity(FromBits(hi)) ? Math.CopySign(Math.Pow(2, 128), f) : FromBits(hi);
            double dLo = Math.Abs(f - vLo), dHi = Math.Abs(f - vHi);
            ushort expected = dLo < dHi ? (ushort)(lo >> 16)
                : dHi < dLo ? (ushort)(hi >> 16)
                : ((lo >> 16) & 1) == 0 ? (ushort)(lo >> 16) : (ushort)(hi >> 16);
            Assert.That(Bits(f), Is.EqualTo(expected), $"0x{bits:X8} ({f.ToString("R", CultureInfo.InvariantCulture)})");
        }
    }

    [Test]
    public void EveryNonNaNBitPatternRoundTripsExactly()
    {
        for (int i = 0; i <= ushort.MaxValue; i++)
        {
            var b = BFloat16.FromRawValue((ushort)i);
            if (BFloat16.IsNaN(b)) continue;
            float f = b;
            Assert.That(BitConverter.SingleToUInt32Bits(f), Is.EqualTo((uint)i << 16), $"widening 0x{i:X4}");
            Assert.That(((BFloat16)f).RawValue, Is.EqualTo((ushort)i), $"narrowing 0x{i:X4}");
            Assert.That((double)b, Is.EqualTo((double)f), $"to double 0x{i:X4}");
        }
    }

    [TestCase(0x7FC0_0000u)]
    [TestCase(0x7F80_0001u)]
    [TestCase(0x7FFF_FFFFu)]
    [TestCase(0xFFC0_0000u)]
    [TestCase(0xFF80_0001u)]
    [TestCase(0x7F80_8000u)]
    public void NaNStaysNaN(uint floatBits)
    {
        var b = (BFloat16)FromBits(floatBits);
        Assert.Multiple(() =>
        {
            Assert.That(BFloat16.IsNaN(b), Is.True, "IsNaN");
            Assert.That(BFloat16.IsInfinity(b), Is.False, "IsInfinity");
            Assert.That(BFloat16.IsFinite(b), Is.False, "IsFinite");
            Assert.That(float.IsNaN(b), Is.True, "widened is NaN");
            Assert.That(b.RawValue >> 15, Is.EqualTo(floatBits >> 31), "sign kept");
            Assert.That(b.RawValue & 0x0040, Is.EqualTo(0x0040), "quiet bit set");
        });
    }

    [Test]
    public void InfinitiesAndConstants()
    {
        Assert.Multiple(() =>
        {
            Assert.That((float)BFloat16.PositiveInfinity, Is.EqualTo(float.PositiveInfinity));
            Assert.That((float)BFloat16.NegativeInfinity, Is.EqualTo(float.NegativeInfinity));
            Assert.That(BFloat16.IsInfinity(BFloat16.PositiveInfinity) && BFloat16.IsInfinity(BFloat16.NegativeInfinity), Is.True);
            Assert.That(BFloat16.IsFinite(BFloat16.PositiveInfinity), Is.False);
            Assert.That(BFloat16.IsNaN(BFloat16.NaN), Is.True);
            Assert.That(float.IsNaN(BFloat16.NaN), Is.True);
            Assert.That((float)BFloat16.Zero, Is.Zero);
            Assert.That((float)BFloat16.One, Is.EqualTo(1f));
            Assert.That((float)BFloat16.MaxValue, Is.EqualTo(3.3895314e38f));
            Assert.That((float)BFloat16.MinValue, Is.EqualTo(-3.3895314e38f));
            Assert.That(BFloat16.IsFinite(BFloat16.MaxValue), Is.True);
            Assert.That((float)BFloat16.MachineEpsilon, Is.EqualTo(1f / 128));
            Assert.That(((BFloat16)(1f + BFloat16.MachineEpsilon)).RawValue, Is.EqualTo((ushort)(BFloat16.One.RawValue + 1)), "1 + MachineEpsilon is the next value");
            Assert.That((float)BFloat16.Epsilon, Is.EqualTo(MathF.ScaleB(1f, -133)), "Epsilon is the smallest subnormal, as float.Epsilon");
            Assert.That((BFloat16)1.0, Is.EqualTo(BFloat16.One), "from double");
            Assert.That(((BFloat16)double.PositiveInfinity).RawValue, Is.EqualTo(BFloat16.PositiveInfinity.RawValue));
            Assert.That(((BFloat16)1e300).RawValue, Is.EqualTo(BFloat16.PositiveInfinity.RawValue), "double overflow");
        });
    }

    [TestCase(0f)]
    [TestCase(1f)]
    [TestCase(-2.5f)]
    [TestCase(0.0078125f)]
    [TestCase(61440f)]
    [TestCase(1.1754944e-38f)]
    [TestCase(-3.3895314e38f)]
    public void RepresentableValuesConvertExactly(float value)
    {
        var b = (BFloat16)value;
        Assert.That((float)b, Is.EqualTo(value));
        Assert.That((double)b, Is.EqualTo((double)value));
        Assert.That((float)(BFloat16)(double)value, Is.EqualTo(value));
    }

    [Test]
    public void Comparisons()
    {
        BFloat16 a = (BFloat16)1.5f, b = (BFloat16)2f, a2 = (BFloat16)1.5f, nan = BFloat16.NaN, nan2 = (BFloat16)float.NaN;
        BFloat16 pz = BFloat16.Zero, nz = BFloat16.FromRawValue(0x8000);
        Assert.Multiple(() =>
        {
            Assert.That(a < b && b > a && a <= b && b >= a && a <= a2 && a >= a2, Is.True, "ordering");
            Assert.That(a == a2 && a != b, Is.True, "equality");
            Assert.That(a > b || b < a || a >= b, Is.False, "ordering negatives");
            Assert.That(nan == nan2 || nan < a || nan > a || nan <= a || nan >= a || nan == a, Is.False, "NaN compares false");
            Assert.That(nan != nan2 && nan != a, Is.True, "NaN is unequal");
            Assert.That(nan.Equals(nan2) && nan.CompareTo(nan2) == 0 && nan.GetHashCode() == nan2.GetHashCode(), Is.True,
                "Equals/CompareTo/GetHashCode agree on NaN, as float.Equals does");
            Assert.That(new HashSet<BFloat16> { nan }.Contains(nan2), Is.True, "a NaN can be found in a set");
            Assert.That(pz == nz && pz.Equals(nz) && pz.GetHashCode() == nz.GetHashCode(), Is.True, "+0 == -0 with equal hashes");
            Assert.That(pz.RawValue, Is.Not.EqualTo(nz.RawValue));
            Assert.That(BFloat16.NegativeInfinity < BFloat16.MinValue && BFloat16.MaxValue < BFloat16.PositiveInfinity, Is.True, "infinities bound the range");
            Assert.That(a.CompareTo(b), Is.Negative);
            Assert.That(b.CompareTo(a), Is.Positive);
            Assert.That(a.CompareTo(a2), Is.Zero);
            Assert.That(a.CompareTo((object?)null), Is.Positive);
            Assert.That(a.CompareTo((object)b), Is.Negative);
            Assert.That(a.Equals((object)a2), Is.True);
            Assert.That(a.Equals((object)1.5f), Is.False, "a boxed float is not a BFloat16");
            Assert.That(a.GetHashCode(), Is.EqualTo(a2.GetHashCode()));
        });
        var ex = Assert.Throws<ArgumentException>(() => a.CompareTo((object)1.5f))!;
        Assert.That(ex.ParamName, Is.EqualTo("obj"));
    }

    [Test]
    public void SortingUsesNumericOrder()
    {
        float[] values = [3f, -1f, 0.5f, float.NegativeInfinity, 100f, -0.25f, float.PositiveInfinity];
        var sorted = values.Select(v => (BFloat16)v).Order().Select(v => (float)v).ToArray();
        Assert.That(sorted, Is.EqualTo(values.Order().ToArray()));
    }

    [Test]
    public void Formatting()
    {
        Assert.Multiple(() =>
        {
            Assert.That(BFloat16.One.ToString(), Is.EqualTo("1"));
            Assert.That(((BFloat16)(-2.5f)).ToString(), Is.EqualTo("-2.5"));
            Assert.That(((BFloat16)0.5f).ToString("F2", CultureInfo.InvariantCulture), Is.EqualTo("0.50"));
            Assert.That(BFloat16.NaN.ToString(), Is.EqualTo("NaN"));
        });
    }
}
