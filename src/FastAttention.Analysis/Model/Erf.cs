// The error function in double (.NET has none).
namespace FastAttention.Analysis.Model;

/// <summary>
/// The error function to about 1e-15: for |x| &lt; 3 the everywhere-positive series
/// <c>erf x = 2/√π · e^(-x²) · Σ (2x²)^n x / (1·3·…·(2n+1))</c> (no cancellation); beyond, <c>1 - erfc x</c> with erfc from
/// its continued fraction (modified Lentz), which converges fast there.
/// </summary>
public static class Erf
{
    /// <summary>erf(<paramref name="x"/>).</summary>
    public static double Compute(double x)
    {
        if (double.IsNaN(x)) return double.NaN;
        double a = Math.Abs(x);
        double result;
        if (a < 3)
        {
            double x2 = a * a, term = a, sum = a;
            for (int n = 1; n < 200; n++)
            {
                term *= 2 * x2 / (2 * n + 1);
                sum += term;
                if (term < 1e-17 * sum) break;
            }
            result = 2 / Math.Sqrt(Math.PI) * Math.Exp(-x2) * sum;
        }
        else if (a > 27)
        {
            result = 1;
        }
        else
        {
            result = 1 - Erfc(a);
        }
        return x < 0 ? -result : result;
    }

    // erfc(a) = e^(-a²)/√π · 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + ...))))), a > 0.
    private static double Erfc(double a)
    {
        const double tiny = 1e-300;
        double f = a, c = a, d = 0;
        for (int n = 1; n < 500; n++)
        {
            double an = n / 2.0;
            d = a + an * d;
            d = Math.Abs(d) < tiny ? 1 / tiny : 1 / d;
            c = a + an / c;
            if (Math.Abs(c) < tiny) c = tiny;
            double delta = c * d;
            f *= delta;
            if (Math.Abs(delta - 1) < 1e-16) break;
        }
        return Math.Exp(-a * a) / Math.Sqrt(Math.PI) / f;
    }
}
