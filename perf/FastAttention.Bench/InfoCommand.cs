// `info`: the machine (CPU features, threads, .NET), the CUDA libraries and GPUs found, and which backend Auto picks and why.
using System.Runtime;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using FastAttention.Bench.Output;
using FastAttention.Bench.Peers;
using FastAttention.Runtime;

namespace FastAttention.Bench;

/// <summary>What <c>info</c> reports, gathered once.</summary>
internal sealed record InfoReport(
    MachineInfo Machine,
    IReadOnlyList<(string Feature, bool Supported)> CpuFeatures,
    string SimdPath,
    string GcMode,
    IReadOnlyList<CudaLibraryStatus> Libraries,
    IReadOnlyList<string> Gpus,
    string? GpuError,
    BackendSelection Auto,
    string OnnxRuntime)
{
    /// <summary>The JSON schema identifier of <c>info --json</c>.</summary>
    public const string Schema = "fastattention-info/1";

    public static InfoReport Gather()
    {
        var features = new List<(string, bool)>
        {
            ("SSE4.2", Sse42.IsSupported), ("AVX", Avx.IsSupported), ("AVX2", Avx2.IsSupported), ("FMA", Fma.IsSupported),
            ("AVX-512F", Avx512F.IsSupported), ("AVX-512BW", Avx512BW.IsSupported), ("AVX-512VL", Avx512F.VL.IsSupported),
            ("AVX-512 VBMI", Avx512Vbmi.IsSupported), ("AVX-VNNI", AvxVnni.IsSupported),
            ("Vector128 accelerated", Vector128.IsHardwareAccelerated), ("Vector256 accelerated", Vector256.IsHardwareAccelerated),
            ("Vector512 accelerated", Vector512.IsHardwareAccelerated),
        };
        string simd = Vector512.IsHardwareAccelerated ? "Vector512 (AVX-512) FMA micro-kernel"
            : Fma.IsSupported && Vector256.IsHardwareAccelerated ? "Vector256 (AVX2/FMA) micro-kernel"
            : "portable Vector code (no AVX2/FMA: slow)";
        var libraries = CudaLibraries.ProbeAll();
        var gpus = new List<string>();
        string? gpuError = null;
        if (libraries[0].IsLoaded)
        {
            try
            {
                foreach (var d in CudaDevice.GetAll())
                {
                    gpus.Add($"{d.Ordinal}: {d}, {d.L2CacheBytes / 1048576.0:F0} MiB L2, {d.SharedMemoryPerBlockOptInBytes / 1024} KiB shared/block (opt-in)");
                }
            }
            catch (Exception e) when (e is CudaException or DllNotFoundException or EntryPointNotFoundException)
            {
                gpuError = e.Message;
            }
        }
        else
        {
            gpuError = "the CUDA driver library is not loaded";
        }
        BackendSelection auto = BackendSelector.Select(BackendPreference.Auto);
        string ort;
        try
        {
            ort = $"{OnnxRuntimePeer.Version} (CPU execution provider; the `compare` peer)";
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or BadImageFormatException or EntryPointNotFoundException)
        {
            ort = $"not loadable: {e.GetBaseException().Message}";
        }
        string gc = GCSettings.IsServerGC ? "server" : "workstation";
        return new InfoReport(MachineInfo.Detect(), features, simd, gc, libraries, gpus, gpuError, auto, ort);
    }

    public IEnumerable<ReportTable> Tables()
    {
        var m = Machine;
        var machine = new ReportTable("Machine")
            .Cols("property", "value")
            .Row("CPU", m.CpuModel)
            .Row("logical cores (default threads)", m.LogicalCores.ToString(System.Globalization.CultureInfo.InvariantCulture))
            .Row("instruction sets", string.Join(", ", CpuFeatures.Where(f => !f.Feature.Contains("accelerated", StringComparison.Ordinal))
                .Select(f => $"{f.Feature} {(f.Supported ? "yes" : "no")}")))
            .Row("vector acceleration", string.Join(", ", CpuFeatures.Where(f => f.Feature.Contains("accelerated", StringComparison.Ordinal))
                .Select(f => $"{f.Feature.Replace(" accelerated", "")} {(f.Supported ? "yes" : "no")}")))
            .Row("CPU engine path", SimdPath)
            .Row(".NET", $"{m.Runtime} ({RuntimeInformation.ProcessArchitecture}, {GcMode} GC, {(m.OptimizedBuild ? "optimized build" : "DEBUG build: not for timing")})")
            .Row("OS", m.Os)
            .Row("ONNX Runtime", OnnxRuntime);
        yield return machine;

        var cuda = new ReportTable("CUDA libraries (through FastAttention's resolver)")
            .Cols("library", "loaded", "version", "from / why not");
        foreach (var l in Libraries)
        {
            cuda.Row(l.Library switch { CudaLibrary.Driver => "driver (libcuda)", CudaLibrary.Nvrtc => "NVRTC", _ => "cuBLAS" },
                l.IsLoaded ? "yes" : "no", l.Version ?? "–", l.IsLoaded ? l.LoadedFrom ?? "" : Shorten(l.Error ?? ""));
        }
        yield return cuda;

        var gpus = new ReportTable("GPUs");
        if (Gpus.Count > 0)
        {
            gpus.Cols("device");
            foreach (string g in Gpus) gpus.Row(g);
        }
        else
        {
            gpus.Note($"None found ({GpuError ?? "the driver reports no device"}).");
        }
        yield return gpus;

        yield return new ReportTable("Backend")
            .Note($"Auto picks **{Auto.Backend}**: {Auto.Reason}")
            .Note(Auto.Backend == ComputeBackend.Cuda
                ? "CUDA attention runs through the FastAttention.Gpu types (CudaAttention, CudaDecode, CudaMultiHeadAttention) on device tensors; span calls (CpuAttention) stay on the CPU engine."
                : "Attention runs on the CPU engine (FastAttention.Cpu).");
    }

    public string Json(string command)
    {
        var m = Machine;
        var o = new JsonObject
        {
            ["schema"] = Schema,
            ["command"] = command,
            ["machine"] = new JsonObject
            {
                ["cpu"] = m.CpuModel, ["logical_cores"] = m.LogicalCores, ["os"] = m.Os, ["runtime"] = m.Runtime,
                ["optimized_build"] = m.OptimizedBuild, ["gc"] = GcMode, ["engine_simd"] = SimdPath,
                ["features"] = new JsonObject(CpuFeatures.Select(f => KeyValuePair.Create(f.Feature, (JsonNode?)JsonValue.Create(f.Supported)))),
            },
            ["cuda_libraries"] = new JsonArray(Libraries.Select(l => (JsonNode?)new JsonObject
            {
                ["library"] = l.Library.ToString().ToLowerInvariant(), ["loaded"] = l.IsLoaded, ["version"] = l.Version,
                ["loaded_from"] = l.LoadedFrom, ["error"] = l.Error,
            }).ToArray()),
            ["gpus"] = new JsonArray(Gpus.Select(g => (JsonNode?)JsonValue.Create(g)).ToArray()),
            ["backend_auto"] = new JsonObject { ["backend"] = Auto.Backend.ToString().ToLowerInvariant(), ["reason"] = Auto.Reason },
            ["onnxruntime"] = OnnxRuntime,
        };
        return o.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n";
    }

    private static string Shorten(string s) => s.Length <= 160 ? s : s[..157] + "...";
}
