// Kernel compile-time benchmark: for every registered specialisation and architecture, the cold NVRTC compile
// (empty cache) and the warm load (a new cache instance reading the disk entry), against the targets of
// 2 s cold and 20 ms warm for the largest kernel. Markdown to stdout; exit 1 without NVRTC, 2 on bad arguments.
using System.Diagnostics;
using System.Globalization;
using FastAttention.Compilation;
using FastAttention.Runtime;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

const double ColdTargetMs = 2000, WarmTargetMs = 20;
const int WarmRepeats = 7;
var architectures = new List<ComputeCapability> { new(8, 0), new(9, 0) };
string? outPath = null;
for (int i = 0; i < args.Length; i++)
{
    try
    {
        switch (args[i])
        {
            case "--arch":
                architectures = args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries).Select(ComputeCapability.Parse).ToList();
                break;
            case "--out":
                outPath = args[++i];
                break;
            case "-h" or "--help":
                Console.WriteLine("usage: FastAttention.CompileBench [--arch sm_80,sm_90] [--out FILE]");
                return 0;
            default:
                throw new ArgumentException($"unknown argument '{args[i]}'");
        }
    }
    catch (Exception e) when (e is ArgumentException or FormatException or IndexOutOfRangeException)
    {
        Console.Error.WriteLine($"error: {e.Message}\nusage: FastAttention.CompileBench [--arch sm_80,sm_90] [--out FILE]");
        return 2;
    }
}

if (!NvrtcInfo.TryGetCurrent(out NvrtcInfo? nvrtc, out string reason))
{
    Console.Error.WriteLine($"error: {reason}");
    return 1;
}

string root = Path.Combine(Path.GetTempPath(), "fastattention-compilebench-" + Environment.ProcessId);
var report = new System.Text.StringBuilder();
try
{
    // NVRTC's first compile in a process pays for loading its builtins; measure it apart.
    var first = Stopwatch.StartNew();
    new KernelCompiler(new KernelCache(null)).Compile(KernelSpecialization.FromSource("warmup", "extern \"C\" __global__ void warmup() {}", ["warmup"]),
        CompileTarget.Cubin(architectures[0]));
    double firstUseMs = first.Elapsed.TotalMilliseconds;

    report.AppendLine($"# Kernel compile times").AppendLine();
    report.AppendLine($"{nvrtc}, {Environment.ProcessorCount} cores, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; " +
        $"command: `dotnet run -c Release --project perf/FastAttention.CompileBench{(args.Length > 0 ? " -- " + string.Join(' ', args) : "")}`").AppendLine();
    report.AppendLine($"First NVRTC compile in the process (trivial kernel, builtins loading): {firstUseMs:F0} ms, not counted below.").AppendLine();
    report.AppendLine("| specialisation | arch | cold compile ms | of which NVRTC ms | warm disk load ms (median of 7) | memory hit µs (median of 7) | image KiB | max registers | spills |");
    report.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|");

    var rows = new List<(string Name, double Cold, double Warm)>();
    foreach (KernelSpecialization spec in KernelRegistry.All)
    {
        foreach (ComputeCapability arch in architectures)
        {
            var target = CompileTarget.Cubin(arch);
            string dir = Path.Combine(root, $"{spec.Name}-{arch.SmName}");
            var cold = new KernelCompiler(new KernelCache(dir));
            var sw = Stopwatch.StartNew();
            CompiledModule module = cold.Compile(spec, target);
            double coldMs = sw.Elapsed.TotalMilliseconds;

            var memoryTimes = new List<double>();
            for (int r = 0; r < WarmRepeats; r++)
            {
                sw.Restart();
                cold.Compile(spec, target);
                memoryTimes.Add(sw.Elapsed.TotalMicroseconds);
            }
            memoryTimes.Sort();
            double memoryUs = memoryTimes[WarmRepeats / 2];

            var warmTimes = new List<double>();
            for (int r = 0; r < WarmRepeats; r++)
            {
                var warm = new KernelCompiler(new KernelCache(dir));
                sw.Restart();
                CompiledModule loaded = warm.Compile(spec, target);
                warmTimes.Add(sw.Elapsed.TotalMilliseconds);
                if (loaded.Origin != CompiledModuleOrigin.DiskCache)
                {
                    throw new InvalidOperationException($"{spec.Name}: expected a disk-cache hit");
                }
            }
            warmTimes.Sort();
            double warmMs = warmTimes[WarmRepeats / 2];
            int registers = module.ResourceUsage.Values.Max(u => u.Registers);
            bool spills = module.ResourceUsage.Values.Any(u => u.HasSpills);
            report.AppendLine($"| {spec.Name} | {arch.SmName} | {coldMs:F0} | {cold.CompileTime.TotalMilliseconds:F0} | {warmMs:F2} | {memoryUs:F1} | " +
                $"{module.Image.Length / 1024.0:F1} | {registers} | {(spills ? "yes" : "0")} |");
            rows.Add(($"{spec.Name} {arch.SmName}", coldMs, warmMs));
            Console.Error.WriteLine($"{spec.Name} {arch.SmName}: cold {coldMs:F0} ms, warm {warmMs:F2} ms");
        }
    }

    var largest = rows.MaxBy(r => r.Cold);
    report.AppendLine();
    report.AppendLine($"Largest kernel by cold time: {largest.Name}: cold {largest.Cold:F0} ms (target < {ColdTargetMs:F0} ms: " +
        $"{(largest.Cold < ColdTargetMs ? "met" : "MISSED")}), warm {largest.Warm:F2} ms (target < {WarmTargetMs:F0} ms: " +
        $"{(largest.Warm < WarmTargetMs ? "met" : "MISSED")}).");
}
finally
{
    try
    {
        Directory.Delete(root, recursive: true);
    }
    catch (DirectoryNotFoundException)
    {
        // Nothing was written.
    }
}

Console.Write(report);
if (outPath is not null)
{
    File.WriteAllText(outPath, report.ToString());
}
return 0;
