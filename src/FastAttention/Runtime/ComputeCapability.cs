// A GPU's compute capability (8.0, 9.0, ...) and the sm_XY / compute_XY names NVRTC and nvcc use for it.
using System.Globalization;

namespace FastAttention.Runtime;

/// <summary>A compute capability such as 8.0 (A100) or 9.0 (H100).</summary>
/// <param name="Major">Major version.</param>
/// <param name="Minor">Minor version (0 to 9).</param>
public readonly record struct ComputeCapability(int Major, int Minor) : IComparable<ComputeCapability>
{
    /// <summary>The real architecture name, e.g. <c>sm_80</c> (a CUBIN target).</summary>
    public string SmName => $"sm_{Major}{Minor}";

    /// <summary>The virtual architecture name, e.g. <c>compute_80</c> (a PTX target).</summary>
    public string ComputeName => $"compute_{Major}{Minor}";

    /// <summary>The number NVRTC uses for it, e.g. 80.</summary>
    public int Number => Major * 10 + Minor;

    /// <summary>From NVRTC's number form (e.g. 90 → 9.0).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="number"/> is not positive.</exception>
    public static ComputeCapability FromNumber(int number)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(number);
        return new ComputeCapability(number / 10, number % 10);
    }

    /// <summary>Parses <c>8.0</c>, <c>80</c>, <c>sm_80</c> or <c>compute_80</c>.</summary>
    /// <exception cref="FormatException"><paramref name="text"/> is none of those forms.</exception>
    public static ComputeCapability Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string s = text.Trim();
        foreach (string prefix in (string[])["sm_", "compute_"])
        {
            if (s.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
            {
                s = s[prefix.Length..];
            }
        }
        int dot = s.IndexOf('.');
        if (dot > 0 && int.TryParse(s[..dot], NumberStyles.None, CultureInfo.InvariantCulture, out int major)
            && int.TryParse(s[(dot + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int minor) && minor < 10)
        {
            return new ComputeCapability(major, minor);
        }
        if (dot < 0 && s.Length >= 2 && int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int number) && number > 0)
        {
            return FromNumber(number);
        }
        throw new FormatException($"'{text}' is not a compute capability; expected e.g. 8.0, 80, sm_80 or compute_80.");
    }

    /// <inheritdoc/>
    public int CompareTo(ComputeCapability other) => Number.CompareTo(other.Number);

    /// <summary>True when <paramref name="left"/> is older than <paramref name="right"/>.</summary>
    public static bool operator <(ComputeCapability left, ComputeCapability right) => left.Number < right.Number;
    /// <summary>True when <paramref name="left"/> is newer than <paramref name="right"/>.</summary>
    public static bool operator >(ComputeCapability left, ComputeCapability right) => left.Number > right.Number;
    /// <summary>True when <paramref name="left"/> is not newer than <paramref name="right"/>.</summary>
    public static bool operator <=(ComputeCapability left, ComputeCapability right) => left.Number <= right.Number;
    /// <summary>True when <paramref name="left"/> is not older than <paramref name="right"/>.</summary>
    public static bool operator >=(ComputeCapability left, ComputeCapability right) => left.Number >= right.Number;

    /// <summary>"8.0" form.</summary>
    public override string ToString() => $"{Major}.{Minor}";
}
