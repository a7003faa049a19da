// Per-kernel resource usage: from the ptxas report NVRTC writes into the program log, and from the driver at load time.
using System.Globalization;
using System.Text.RegularExpressions;

namespace FastAttention.Compilation;

/// <summary>What ptxas reported for one kernel when it was compiled to a CUBIN (<c>--ptxas-options=-v</c>).</summary>
/// <param name="KernelName">The kernel (entry function).</param>
/// <param name="Architecture">The architecture it was compiled for, e.g. <c>sm_90</c>.</param>
/// <param name="Registers">Registers per thread.</param>
/// <param name="StaticSharedMemoryBytes">Static shared memory per block (dynamic shared memory is set at launch).</param>
/// <param name="StackFrameBytes">Stack frame per thread.</param>
/// <param name="SpillStoreBytes">Bytes spilled to local memory (stores); 0 for a well-tuned kernel.</param>
/// <param name="SpillLoadBytes">Bytes reloaded from spills.</param>
/// <param name="ConstantMemoryBytes">Constant bank 0 (kernel parameters and constants).</param>
public sealed record KernelResourceUsage(string KernelName, string Architecture, int Registers, int StaticSharedMemoryBytes,
    int StackFrameBytes, int SpillStoreBytes, int SpillLoadBytes, int ConstantMemoryBytes)
{
    /// <summary>True when ptxas spilled registers.</summary>
    public bool HasSpills => SpillStoreBytes > 0 || SpillLoadBytes > 0;

    /// <summary>"fa_fill_f32 sm_80: 10 registers, 0 B smem, 0 B stack, 0/0 B spill".</summary>
    public override string ToString() =>
        $"{KernelName} {Architecture}: {Registers} registers, {StaticSharedMemoryBytes} B smem, {StackFrameBytes} B stack, " +
        $"{SpillStoreBytes}/{SpillLoadBytes} B spill stores/loads";
}

/// <summary>Resource usage of a loaded kernel as the driver reports it (cuFuncGetAttribute).</summary>
/// <param name="Registers">Registers per thread.</param>
/// <param name="StaticSharedMemoryBytes">Static shared memory per block.</param>
/// <param name="LocalMemoryBytes">Local memory per thread (stack and spills).</param>
/// <param name="ConstantMemoryBytes">User constant memory.</param>
/// <param name="MaxThreadsPerBlock">Largest block this kernel can be launched with on this device.</param>
/// <param name="MaxDynamicSharedMemoryBytes">Dynamic shared memory currently allowed (raise with <see cref="Runtime.CudaKernel.SetMaxDynamicSharedMemory"/>).</param>
/// <param name="PtxVersion">PTX ISA version the kernel was compiled from (major·10 + minor).</param>
/// <param name="BinaryVersion">Architecture of the binary (major·10 + minor).</param>
public sealed record KernelFunctionAttributes(int Registers, int StaticSharedMemoryBytes, int LocalMemoryBytes, int ConstantMemoryBytes,
    int MaxThreadsPerBlock, int MaxDynamicSharedMemoryBytes, int PtxVersion, int BinaryVersion);

/// <summary>Parses ptxas <c>-v</c> output.</summary>
internal static partial class PtxasReport
{
    // ptxas info    : Compiling entry function 'fa_fill_f32' for 'sm_80'
    [GeneratedRegex(@"Compiling entry function '(?<name>[^']+)' for '(?<arch>[^']+)'")]
    private static partial Regex EntryLine();

    // ptxas info    : Function properties for fa_fill_f32
    [GeneratedRegex(@"Function properties for (?<name>\S+)")]
    private static partial Regex PropertiesLine();

    //     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    [GeneratedRegex(@"(?<stack>\d+) bytes stack frame, (?<stores>\d+) bytes spill stores, (?<loads>\d+) bytes spill loads")]
    private static partial Regex FrameLine();

    // ptxas info    : Used 10 registers, 4096 bytes smem, 380 bytes cmem[0]   (newer ptxas adds "used N barriers")
    [GeneratedRegex(@"Used (?<regs>\d+) registers")]
    private static partial Regex UsedLine();

    [GeneratedRegex(@"(?<n>\d+) bytes smem")]
    private static partial Regex SmemPart();

    [GeneratedRegex(@"(?<n>\d+) bytes cmem\[0\]")]
    private static partial Regex CmemPart();

    /// <summary>One entry per kernel ("entry function") found in <paramref name="log"/>.</summary>
    public static IReadOnlyDictionary<string, KernelResourceUsage> Parse(string log)
    {
        var result = new Dictionary<string, KernelResourceUsage>(StringComparer.Ordinal);
        string? entry = null, arch = null, propertiesFor = null;
        int stack = 0, stores = 0, loads = 0;
        foreach (string line in log.Split('\n'))
        {
            if (EntryLine().Match(line) is { Success: true } e)
            {
                entry = e.Groups["name"].Value;
                arch = e.Groups["arch"].Value;
                stack = stores = loads = 0;
                propertiesFor = null;
            }
            else if (PropertiesLine().Match(line) is { Success: true } p)
            {
                propertiesFor = p.Groups["name"].Value;
            }
            else if (FrameLine().Match(line) is { Success: true } f && propertiesFor == entry)
            {
                stack = Int(f, "stack");
                stores = Int(f, "stores");
                loads = Int(f, "loads");
            }
            else if (UsedLine().Match(line) is { Success: true } u && entry is not null)
            {
                Match smem = SmemPart().Match(line), cmem = CmemPart().Match(line);
                result[entry] = new KernelResourceUsage(entry, arch!, Int(u, "regs"),
                    smem.Success ? Int(smem, "n") : 0, stack, stores, loads, cmem.Success ? Int(cmem, "n") : 0);
                entry = null;
            }
        }
        return result;
    }

    private static int Int(Match m, string group) => int.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture);
}
