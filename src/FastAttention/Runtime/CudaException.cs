// A failed CUDA driver call: the error name and description the driver gives, and the call that failed.
namespace FastAttention.Runtime;

/// <summary>A CUDA driver API call failed.</summary>
public sealed class CudaException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="errorCode">The CUresult value.</param>
    /// <param name="errorName">The driver's name for it, e.g. <c>CUDA_ERROR_OUT_OF_MEMORY</c>.</param>
    /// <param name="description">The driver's description of it.</param>
    /// <param name="call">The failing call as written in the source.</param>
    /// <param name="detail">More context, e.g. the JIT log of a module that failed to load; may be null.</param>
    public CudaException(int errorCode, string errorName, string description, string call, string? detail = null)
        : base($"{call} failed: {errorName} ({errorCode}): {description}" + (string.IsNullOrEmpty(detail) ? "" : $"{Environment.NewLine}{detail}"))
    {
        ErrorCode = errorCode;
        ErrorName = errorName;
        Description = description;
        Call = call;
        Detail = detail;
    }

    /// <summary>The CUresult value.</summary>
    public int ErrorCode { get; }

    /// <summary>The driver's name for the error, e.g. <c>CUDA_ERROR_NO_DEVICE</c>.</summary>
    public string ErrorName { get; }

    /// <summary>The driver's description of the error.</summary>
    public string Description { get; }

    /// <summary>The failing call as written in the source.</summary>
    public string Call { get; }

    /// <summary>More context (e.g. a JIT log), or null.</summary>
    public string? Detail { get; }
}
