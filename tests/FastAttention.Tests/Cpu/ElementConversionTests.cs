// The engine's row conversion from IEEE half bit patterns to fp32 (Elements.HalfToSingle), against .NET's own
// (float)Half on all 65536 patterns, through the 512-bit, 256-bit and scalar paths and at unaligned starts.

using FastAttention.Cpu.Engine;

namespace FastAttention.Tests.Cpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed unsafe class ElementConversionTests
{
    [TestCase(0, 65536)]       // 32-wide vectors only
    [TestCase(0, 65536 - 16)]  // ends with a 16-wide vector
    [TestCase(3, 65536 - 3)]   // unaligned start, ends with 13 scalar elements
    [TestCase(5, 21)]          // 16-wide vector and scalar tail only
    public void HalfToSingleMatchesTheRuntimeOnEveryPattern(int start, int count)
    {
        var bits = new ushort[65536];
        for (int i = 0; i < bits.Length; i++) bits[i] = (ushort)i;
        var converted = new float[count];
        fixed (ushort* h = bits)
        fixed (float* f = converted)
        {
            Elements.HalfToSingle(h + start, count, f);
        }
        int mismatches = 0;
        string first = "";
        for (int i = 0; i < count; i++)
        {
            ushort pattern = bits[start + i];
            float expected = (float)BitConverter.UInt16BitsToHalf(pattern);
            float actual = converted[i];
            bool same = float.IsNaN(expected)
                ? float.IsNaN(actual) && float.IsNegative(actual) == float.IsNegative(expected)
                : BitConverter.SingleToInt32Bits(actual) == BitConverter.SingleToInt32Bits(expected);
            if (!same && mismatches++ == 0) first = $"0x{pattern:x4}: {actual:R} (0x{BitConverter.SingleToInt32Bits(actual):x8}), expected {expected:R}";
        }
        Assert.That(mismatches, Is.Zero, $"first mismatch {first}");
    }
}
