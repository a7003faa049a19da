// The kernel compiler of every GPU attention fixture: KernelCompiler.Shared, so the tests use the same NVRTC options
// and the same disk cache ($FASTATTN_KERNEL_CACHE) as the library and the bench. A kernel compiled by one process of
// the GPU suite (its warm stage, or an earlier test run) is loaded from disk by the later ones instead of recompiled.
using FastAttention.Compilation;

namespace FastAttention.Tests.Gpu;

internal static class ForwardTestCompiler
{
    public static KernelCompiler Instance => KernelCompiler.Shared;
}
