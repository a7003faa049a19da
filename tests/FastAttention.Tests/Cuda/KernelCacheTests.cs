// The kernel cache with real NVRTC compiles: memory and disk hits, one compile for concurrent requests,
// corrupt disk entries detected and replaced, option changes miss, unwritable folders tolerated.
using FastAttention.Compilation;

namespace FastAttention.Tests.Cuda;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class KernelCacheTests
{
    private static readonly KernelSpecialization s_spec = KernelRegistry.Utility(KernelElementType.Float32);
    private static readonly CompileTarget s_target = CompileTarget.Cubin(new(8, 0));

    [Test]
    public void SecondRequestIsAMemoryHit()
    {
        CudaTestSupport.RequireNvrtc();
        var compiler = new KernelCompiler(new KernelCache(null));
        CompiledModule first = compiler.Compile(s_spec, s_target);
        CompiledModule second = compiler.Compile(s_spec, s_target);
        Assert.That(second, Is.SameAs(first));
        Assert.That(compiler.Compilations, Is.EqualTo(1));
        Assert.That(compiler.Cache.Misses, Is.EqualTo(1));
        Assert.That(compiler.Cache.MemoryHits, Is.EqualTo(1));
        Assert.That(first.Origin, Is.EqualTo(CompiledModuleOrigin.Compiled));
    }

    [Test]
    public void AnotherProcessFindsTheModuleOnDisk()
    {
        CudaTestSupport.RequireNvrtc();
        using var dir = new TempDirectory();
        CompiledModule compiled = new KernelCompiler(new KernelCache(dir.Path)).Compile(s_spec, s_target);
        Assert.That(Directory.GetFiles(dir.Path), Has.Length.EqualTo(1));
        Assert.That(Path.GetFileName(Directory.GetFiles(dir.Path)[0]), Does.StartWith("utility_f32-sm_80-cubin-"));

        var fresh = new KernelCompiler(new KernelCache(dir.Path));
        CompiledModule loaded = fresh.Compile(s_spec, s_target);
        Assert.That(fresh.Compilations, Is.Zero);
        Assert.That(fresh.Cache.DiskHits, Is.EqualTo(1));
        Assert.That(loaded.Origin, Is.EqualTo(CompiledModuleOrigin.DiskCache));
        Assert.That(loaded.Image.ToArray(), Is.EqualTo(compiled.Image.ToArray()));
        Assert.That(loaded.ResourceUsage, Is.EquivalentTo(compiled.ResourceUsage), "the ptxas report is cached with the image");
        Assert.That(loaded.CacheKey, Is.EqualTo(compiled.CacheKey));
    }

    [Test]
    public void ConcurrentRequestsCompileOnce()
    {
        CudaTestSupport.RequireNvrtc();
        using var dir = new TempDirectory();
        var compiler = new KernelCompiler(new KernelCache(dir.Path));
        const int threads = 8;
        using var start = new Barrier(threads);
        var results = new CompiledModule[threads];
        var workers = Enumerable.Range(0, threads).Select(i => new Thread(() =>
        {
            start.SignalAndWait();
            results[i] = compiler.Compile(s_spec, s_target);
        })).ToArray();
        foreach (var w in workers) w.Start();
        foreach (var w in workers) w.Join();
        Assert.That(compiler.Compilations, Is.EqualTo(1));
        Assert.That(results, Is.All.SameAs(results[0]));
        Assert.That(compiler.Cache.MemoryHits, Is.EqualTo(threads - 1));
    }

    [TestCase("truncated")]
    [TestCase("payload bit flip")]
    [TestCase("garbage header")]
    [TestCase("empty file")]
    public void ACorruptDiskEntryIsDetectedAndRecompiled(string damage)
    {
        CudaTestSupport.RequireNvrtc();
        using var dir = new TempDirectory();
        CompiledModule original = new KernelCompiler(new KernelCache(dir.Path)).Compile(s_spec, s_target);
        string file = Directory.GetFiles(dir.Path).Single();
        byte[] bytes = File.ReadAllBytes(file);
        byte[] damaged = damage switch
        {
            "truncated" => bytes[..(bytes.Length / 2)],
            "payload bit flip" => Flip(bytes, bytes.Length - 100),
            "garbage header" => Flip(bytes, 3),
            _ => [],
        };
        File.WriteAllBytes(file, damaged);

        var compiler = new KernelCompiler(new KernelCache(dir.Path));
        CompiledModule recompiled = compiler.Compile(s_spec, s_target);
        Assert.That(compiler.Cache.CorruptEntries, Is.EqualTo(1));
        Assert.That(compiler.Compilations, Is.EqualTo(1));
        Assert.That(recompiled.Origin, Is.EqualTo(CompiledModuleOrigin.Compiled));
        Assert.That(recompiled.Image.ToArray(), Is.EqualTo(original.Image.ToArray()));

        var third = new KernelCompiler(new KernelCache(dir.Path));
        third.Compile(s_spec, s_target);
        Assert.That(third.Cache.DiskHits, Is.EqualTo(1), "the entry was rewritten");
        Assert.That(third.Cache.CorruptEntries, Is.Zero);
    }

    [Test]
    public void DifferentOptionsOrArchitecturesDoNotShareEntries()
    {
        CudaTestSupport.RequireNvrtc();
        using var dir = new TempDirectory();
        var cache = new KernelCache(dir.Path);
        var plain = new KernelCompiler(cache);
        var lineInfo = new KernelCompiler(cache, new CompileOptions { LineInfo = true });
        string k1 = plain.Compile(s_spec, s_target).CacheKey;
        string k2 = lineInfo.Compile(s_spec, s_target).CacheKey;
        string k3 = plain.Compile(s_spec, CompileTarget.Cubin(new(9, 0))).CacheKey;
        string k4 = plain.Compile(KernelRegistry.Utility(KernelElementType.Float16), s_target).CacheKey;
        Assert.That(new[] { k1, k2, k3, k4 }, Is.Unique);
        Assert.That(cache.Misses, Is.EqualTo(4));
        Assert.That(Directory.GetFiles(dir.Path), Has.Length.EqualTo(4));
    }

    [Test]
    public void AnUnwritableCacheFolderStillReturnsTheModule()
    {
        CudaTestSupport.RequireNvrtc();
        using var dir = new TempDirectory();
        string blocker = Path.Combine(dir.Path, "not-a-folder");
        File.WriteAllText(blocker, "a file where the cache folder should be");
        var compiler = new KernelCompiler(new KernelCache(blocker));
        CompiledModule module = compiler.Compile(s_spec, s_target);
        Assert.That(module.Image.Length, Is.GreaterThan(0));
        Assert.That(compiler.Cache.WriteFailures, Is.EqualTo(1));
    }

    private static byte[] Flip(byte[] bytes, int index)
    {
        byte[] copy = (byte[])bytes.Clone();
        copy[index] ^= 0x5A;
        return copy;
    }
}
