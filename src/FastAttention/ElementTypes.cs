// The element types attention accepts, and the check that rejects the rest.

namespace FastAttention;

/// <summary>Element types of attention tensors: float, <see cref="Half"/>, <see cref="BFloat16"/>.</summary>
public static class ElementTypes
{
    /// <summary>True for float, Half and BFloat16.</summary>
    public static bool IsSupported<T>() =>
        typeof(T) == typeof(float) || typeof(T) == typeof(Half) || typeof(T) == typeof(BFloat16);

    /// <summary>Throws unless <typeparamref name="T"/> is float, Half or BFloat16.</summary>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> is not supported.</exception>
    public static void Require<T>(string paramName)
    {
        if (!IsSupported<T>())
        {
            throw new ArgumentException(
                $"Element type {typeof(T).Name} is not supported; use float, Half or BFloat16.", paramName);
        }
    }
}
