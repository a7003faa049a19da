// A failed cuBLAS call: the status name and description cuBLAS gives, and the call that failed.
namespace FastAttention.Runtime;

/// <summary>A cuBLAS call failed.</summary>
public sealed class CublasException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="status">The cublasStatus_t value.</param>
    /// <param name="statusName">cuBLAS's name for it, e.g. <c>CUBLAS_STATUS_INVALID_VALUE</c>.</param>
    /// <param name="description">cuBLAS's description of it (empty with cuBLAS before 11.4.2).</param>
    /// <param name="call">The failing call as written in the source.</param>
    public CublasException(int status, string statusName, string description, string call)
        : base($"{call} failed: {statusName} ({status})" + (description.Length > 0 ? $": {description}" : ""))
    {
        Status = status;
        StatusName = statusName;
        Description = description;
        Call = call;
    }

    /// <summary>The cublasStatus_t value.</summary>
    public int Status { get; }

    /// <summary>cuBLAS's name for the status.</summary>
    public string StatusName { get; }

    /// <summary>cuBLAS's description of the status.</summary>
    public string Description { get; }

    /// <summary>The failing call as written in the source.</summary>
    public string Call { get; }
}
