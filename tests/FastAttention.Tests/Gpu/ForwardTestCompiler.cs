// One memory-only kernel compiler for every GPU attention fixture: each specialisation is compiled once per test run
// (device time is scarce on the GPU hosts), and nothing is read from or left in a disk cache.
using FastAttention.Compilation;

namespace FastAttention.Tests.Gpu;

internal static class ForwardTestCompiler
{
    public static KernelCompiler Instance { get; } = new(new KernelCache(null));
}
