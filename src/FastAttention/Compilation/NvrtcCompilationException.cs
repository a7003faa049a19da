// NVRTC failed: the full program log, the options the program was compiled with, and the failing call.
namespace FastAttention.Compilation;

/// <summary>
/// NVRTC failed to compile a kernel program (or an NVRTC call made for it failed). <see cref="Log"/> holds
/// the complete compiler log and <see cref="Options"/> the exact option list, so the failure can be
/// reproduced with nvcc or NVRTC elsewhere.
/// </summary>
public sealed class NvrtcCompilationException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="errorName">NVRTC's name for the result, e.g. <c>NVRTC_ERROR_COMPILATION</c>.</param>
    /// <param name="call">The failing call, or the program that failed (e.g. <c>nvrtcCompileProgram(utility_f16)</c>).</param>
    /// <param name="log">The full program log (may be empty).</param>
    /// <param name="options">The compile options.</param>
    public NvrtcCompilationException(string errorName, string call, string log, IReadOnlyList<string> options)
        : base(BuildMessage(errorName, call, log, options))
    {
        ErrorName = errorName;
        Call = call;
        Log = log;
        Options = options;
    }

    /// <summary>NVRTC's name for the result.</summary>
    public string ErrorName { get; }

    /// <summary>The failing call or program.</summary>
    public string Call { get; }

    /// <summary>The complete program log.</summary>
    public string Log { get; }

    /// <summary>The compile options, in the order passed to NVRTC.</summary>
    public IReadOnlyList<string> Options { get; }

    private static string BuildMessage(string errorName, string call, string log, IReadOnlyList<string> options)
    {
        string message = $"{call} failed: {errorName}.";
        if (options.Count > 0)
        {
            message += $"{Environment.NewLine}Options: {string.Join(' ', options)}";
        }
        if (log.Length > 0)
        {
            message += $"{Environment.NewLine}Log:{Environment.NewLine}{log.TrimEnd()}";
        }
        return message;
    }
}
