// `gpu --warm`: compiles every registered kernel specialisation for one target, in parallel, through a compiler whose
// disk cache the later processes of the GPU suite read; also the source of the per-kernel ptxas report (cached
// modules keep their compile log, so a warm cache gives the report without running NVRTC again).
using System.Collections.Concurrent;
using System.Diagnostics;
using FastAttention.Compilation;

namespace FastAttention.Bench.Gpu;

internal static class GpuWarm
{
    /// <summary>What <see cref="CompileAll"/> did.</summary>
    /// <param name="Kernels">ptxas report of every kernel, ordered by name (empty for a PTX target).</param>
    /// <param name="Specializations">How many specialisations were requested.</param>
    /// <param name="Compiled">How many ran NVRTC (the rest came from the memory or disk cache).</param>
    /// <param name="Elapsed">Wall time.</param>
    public sealed record Result(IReadOnlyList<KernelResourceUsage> Kernels, int Specializations, long Compiled, TimeSpan Elapsed);

    /// <summary>Compiles <paramref name="specializations"/> for <paramref name="target"/> with up to <paramref name="parallelism"/> threads.</summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="parallelism"/> is below 1.</exception>
    /// <exception cref="AggregateException">Compilations failed (each inner exception names its specialisation's failure).</exception>
    public static Result CompileAll(KernelCompiler compiler, IReadOnlyCollection<KernelSpecialization> specializations, CompileTarget target, int parallelism)
    {
        ArgumentNullException.ThrowIfNull(compiler);
        ArgumentNullException.ThrowIfNull(specializations);
        ArgumentOutOfRangeException.ThrowIfLessThan(parallelism, 1);
        long before = compiler.Compilations;
        var start = Stopwatch.StartNew();
        var kernels = new ConcurrentBag<KernelResourceUsage>();
        Parallel.ForEach(specializations, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, spec =>
        {
            foreach (KernelResourceUsage usage in compiler.Compile(spec, target).ResourceUsage.Values) kernels.Add(usage);
        });
        var ordered = kernels.OrderBy(k => k.KernelName, StringComparer.Ordinal).ThenBy(k => k.Architecture, StringComparer.Ordinal).ToList();
        return new Result(ordered, specializations.Count, compiler.Compilations - before, start.Elapsed);
    }
}
