// `gpu`: FastAttention's CUDA kernels timed with CUDA events on the shapes the PyTorch peers use (perf/peers/
// torch_gpu_*.py), JSON out (rewritten after each section). `gpu --warm` only fills the kernel cache for the device.
// Without a CUDA device it says so on one line and exits 0, so CPU hosts are unaffected.
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastAttention.Bench.Output;
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Runtime;

namespace FastAttention.Bench.Gpu;

internal static class GpuCommand
{
    /// <summary>Schema of the JSON <c>gpu --json</c> writes.</summary>
    public const string Schema = "fastattention-gpu-bench/1";

    /// <summary>Sections of <c>gpu</c>, in run order.</summary>
    public static readonly string[] Sections = ["copy", "forward", "sparse", "mha", "decode", "softmax"];

    /// <summary>Exit code of <c>gpu --probe</c> when no CUDA device is usable.</summary>
    public const int NoDevice = 3;

    /// <summary>The device, or null and why not (no driver, no device, NVRTC missing).</summary>
    public static CudaDevice? FindDevice(out string reason)
    {
        BackendSelection selection = BackendSelector.Select();
        reason = selection.Reason;
        return selection.Backend == ComputeBackend.Cuda ? selection.Device : null;
    }

    public static int Run(CliConsole console, bool quick, bool probe, string? jsonFile, IReadOnlySet<string> sections, string[] args, bool warm = false)
    {
        CudaDevice? device = FindDevice(out string reason);
        if (device is null)
        {
            console.Out.WriteLine($"no CUDA device: {reason}");
            console.Out.Flush();
            if (!probe && !warm && jsonFile is not null)
            {
                RunSession.WriteFile(jsonFile, Json(null, null, "", [], [], [], quick, Cli.CommandLine(args), reason));
                console.Error.WriteLine($"[gpu] wrote {jsonFile} (no rows)");
            }
            return probe ? NoDevice : ExitCodes.Ok;
        }
        console.Out.WriteLine($"CUDA device: {device}");
        console.Out.Flush();
        if (probe) return ExitCodes.Ok;
        if (warm) return Warm(console, device);

        using var context = CudaContext.Create(device);
        using var stream = CudaStream.Create(context);
        var (peakGbs, peakSource) = GpuCases.PeakHbm(device.Name, device.MemoryClockRateKHz, device.MemoryBusWidthBits);
        var bench = new GpuBench(context, stream, quick, console.Error, peakGbs);
        string deviceLabel = $"cuda:{device.Ordinal} {device.Name}";
        var rows = new List<ResultRow>();
        var failures = new List<string>();
        IReadOnlyCollection<KernelResourceUsage> kernels = [];
        void Save()
        {
            if (jsonFile is null) return;
            RunSession.WriteFile(jsonFile, Json(device, peakGbs, peakSource, kernels, rows, failures, quick, Cli.CommandLine(args)));
            console.Error.WriteLine($"[gpu] wrote {jsonFile} ({rows.Count} rows)");
        }
        // Each section's rows are printed and saved as soon as it ends: a run cut off by a time cap keeps what it measured.
        foreach (string section in Sections.Where(sections.Contains))
        {
            console.Error.WriteLine($"[gpu] {section}");
            try
            {
                List<ResultRow> sectionRows = [.. (section switch
                {
                    "copy" => bench.Copy(),
                    "forward" => bench.Forward(),
                    "sparse" => bench.Sparse(),
                    "mha" => bench.MultiHead(),
                    "decode" => bench.Decode(),
                    _ => bench.Softmax(),
                }).Select(r => r with { Device = deviceLabel })];
                rows.AddRange(sectionRows);
                foreach (ResultRow r in sectionRows) console.Out.WriteLine(GpuReport.Line(r));
                console.Out.Flush();
            }
            catch (Exception e) when (IsGpuFailure(e))
            {
                // One failing section does not lose the others; the failure is in the JSON and the exit code.
                string message = $"{section}: {e.GetType().Name}: {e.Message}";
                failures.Add(message);
                console.Error.WriteLine($"[gpu] error: {message}");
            }
            Save();
        }
        // The ptxas report last: after `gpu --warm` (or the sections) every module is in the cache, so this reads logs.
        try
        {
            kernels = GpuWarm.CompileAll(KernelCompiler.Shared, KernelRegistry.All, KernelCompiler.TargetFor(device), Environment.ProcessorCount).Kernels;
        }
        catch (Exception e) when (e is AggregateException || IsGpuFailure(e))
        {
            string message = $"kernel report: {e.GetType().Name}: {e.Message}";
            failures.Add(message);
            console.Error.WriteLine($"[gpu] error: {message}");
        }
        Save();
        console.Out.Flush();
        return failures.Count == 0 ? ExitCodes.Ok : ExitCodes.Failed;
    }

    private static bool IsGpuFailure(Exception e) =>
        e is CudaException or CublasException or NvrtcCompilationException or DllNotFoundException or ArgumentException or NotSupportedException or InvalidOperationException;

    /// <summary>
    /// <c>gpu --warm</c>: every registered specialisation compiled for this device's architecture, over all cores, into
    /// <see cref="KernelCompiler.Shared"/>'s cache; one ptxas line per kernel on stdout (the suite's kernel report).
    /// </summary>
    private static int Warm(CliConsole console, CudaDevice device)
    {
        CompileTarget target = KernelCompiler.TargetFor(device);
        KernelCache cache = KernelCompiler.Shared.Cache;
        GpuWarm.Result result;
        try
        {
            result = GpuWarm.CompileAll(KernelCompiler.Shared, KernelRegistry.All, target, Environment.ProcessorCount);
        }
        catch (AggregateException e)
        {
            foreach (Exception inner in e.Flatten().InnerExceptions) console.Error.WriteLine($"[gpu] warm error: {inner.GetType().Name}: {inner.Message}");
            return ExitCodes.Failed;
        }
        foreach (KernelResourceUsage usage in result.Kernels) console.Out.WriteLine(usage);
        console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"warm: {result.Specializations} specialisations for {target}, {result.Compiled} compiled by NVRTC, {cache.DiskHits} from disk, " +
            $"{result.Elapsed.TotalSeconds:F1} s on {Environment.ProcessorCount} threads; cache: {cache.Directory ?? "memory only"}"));
        console.Out.Flush();
        return ExitCodes.Ok;
    }

    /// <summary>
    /// The JSON document: device (null and <c>no_device</c> = the reason when there is none), driver/NVRTC, the ptxas
    /// report of every registered kernel for the device, rows (the CLI's row schema), errors of failed sections.
    /// </summary>
    public static string Json(CudaDevice? device, double? peakGbs, string peakSource, IReadOnlyCollection<KernelResourceUsage> kernels,
        IReadOnlyList<ResultRow> rows, IReadOnlyList<string> errors, bool quick, string command, string? noDevice = null)
    {
        var root = new JsonObject
        {
            ["schema"] = Schema,
            ["tool"] = "FastAttention.Bench gpu",
            ["command"] = command,
            ["date_utc"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            ["mode"] = quick ? "quick" : "full",
            ["no_device"] = noDevice,
            ["device"] = device is null ? null : new JsonObject
            {
                ["name"] = device.Name,
                ["sm"] = device.ComputeCapability.SmName,
                ["multiprocessors"] = device.MultiprocessorCount,
                ["memory_bytes"] = device.TotalMemoryBytes,
                ["memory_clock_khz"] = device.MemoryClockRateKHz,
                ["bus_width_bits"] = device.MemoryBusWidthBits,
                ["peak_hbm_gbs"] = peakGbs,
                ["peak_hbm_source"] = peakSource,
            },
            ["driver_version"] = device is null ? null : CudaDevice.DriverVersion,
            ["nvrtc"] = NvrtcInfo.TryGetCurrent(out NvrtcInfo? nvrtc, out _) ? nvrtc!.ToString() : null,
            ["kernels"] = new JsonArray([.. kernels.OrderBy(k => k.KernelName, StringComparer.Ordinal).Select(k => (JsonNode)new JsonObject
            {
                ["name"] = k.KernelName,
                ["arch"] = k.Architecture,
                ["registers"] = k.Registers,
                ["spill_bytes"] = k.SpillStoreBytes + k.SpillLoadBytes,
                ["stack_bytes"] = k.StackFrameBytes,
                ["smem_bytes"] = k.StaticSharedMemoryBytes,
            })]),
            ["errors"] = new JsonArray([.. errors.Select(e => (JsonNode)JsonValue.Create(e)!)]),
            ["rows"] = new JsonArray([.. rows.Select(r => (JsonNode)ResultsFile.RowJson(r))]),
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n";
    }
}

/// <summary>One-line text of a row for stdout.</summary>
internal static class GpuReport
{
    public static string Line(ResultRow r)
    {
        var parts = new List<string> { $"{r.Section,-8} {r.Case,-48} {r.Impl,-22}" };
        if (r.MedianMs is { } ms) parts.Add($"{ms.ToString("F3", CultureInfo.InvariantCulture),10} ms");
        if (r.Gflops is { } g) parts.Add($"{(g / 1000).ToString("F1", CultureInfo.InvariantCulture)} TFLOP/s");
        if (r.Gbs is { } b) parts.Add($"{b.ToString("F0", CultureInfo.InvariantCulture)} GB/s");
        if (r.PctReadPeak is { } p) parts.Add($"{(p * 100).ToString("F0", CultureInfo.InvariantCulture)}% of peak HBM");
        if (r.Speedup is { } s) parts.Add($"x{s.ToString("F2", CultureInfo.InvariantCulture)}");
        if (r.Note is { } n) parts.Add($"({n})");
        return string.Join("  ", parts);
    }
}
