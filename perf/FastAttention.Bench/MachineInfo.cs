// What the machine is: CPU model and features, cores, runtime, OS.
using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastAttention.Bench;

/// <summary>What the machine is, as printed in the report header.</summary>
internal sealed record MachineInfo(string CpuModel, int LogicalCores, string Runtime, string Os, bool Vector512Accelerated, bool HasAvx512F, bool HasFma, bool OptimizedBuild, bool HasAvx2 = false)
{
    /// <summary>Reads /proc/cpuinfo (model name, family, model) and the runtime's view of the hardware.</summary>
    public static MachineInfo Detect()
    {
        string cpu = RuntimeInformation.ProcessArchitecture.ToString();
        try
        {
            if (File.Exists("/proc/cpuinfo"))
            {
                string? name = null, family = null, model = null;
                foreach (string line in File.ReadLines("/proc/cpuinfo"))
                {
                    int colon = line.IndexOf(':');
                    if (colon < 0) continue;
                    string key = line[..colon].Trim(), value = line[(colon + 1)..].Trim();
                    if (key == "model name") name ??= value;
                    else if (key == "cpu family") family ??= value;
                    else if (key == "model") model ??= value;
                    if (line.Length == 0 || (name is not null && family is not null && model is not null)) break;
                }
                if (name is not null)
                {
                    cpu = family is not null && model is not null ? $"{name} (family {family}, model {model})" : name;
                }
            }
        }
        catch (IOException)
        {
            // Keep the architecture name.
        }
        catch (UnauthorizedAccessException)
        {
            // Keep the architecture name.
        }
        bool optimized = typeof(MachineInfo).Assembly.GetCustomAttribute<DebuggableAttribute>()?.IsJITOptimizerDisabled != true;
        return new MachineInfo(cpu, Environment.ProcessorCount, RuntimeInformation.FrameworkDescription,
            RuntimeInformation.OSDescription, Vector512.IsHardwareAccelerated, Avx512F.IsSupported, Fma.IsSupported, optimized, Avx2.IsSupported);
    }
}
