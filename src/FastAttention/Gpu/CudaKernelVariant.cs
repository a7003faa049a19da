// Which version of a kernel family runs: the tuned one or the plain SIMT one kept beside it (DESIGN.md section 3).
namespace FastAttention.Gpu;

/// <summary>
/// The version of a kernel family a GPU entry point launches. Every family keeps a plain SIMT version (simple
/// indexing, no tensor cores) beside its tuned one: on a new GPU the plain version is checked against the CPU
/// first, then the tuned one against both.
/// </summary>
public enum CudaKernelVariant
{
    /// <summary>The tuned kernels (vectorised, tensor cores where the family uses them).</summary>
    Tuned,

    /// <summary>The plain SIMT kernels.</summary>
    Plain,
}
