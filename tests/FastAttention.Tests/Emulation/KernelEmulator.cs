// Runs a kernel specialisation on the CPU: the program NVRTC would compile is rewritten (EmulatorSource), compiled by
// g++ against native/emu/fa_emu.h into a shared library cached on disk by a hash of (source, options, compiler), loaded
// with NativeLibrary and launched with the same KernelArguments the GPU path builds (host pointers stand for device
// pointers). Compile failures, deadlocks, bad launch configurations and the emulator's own checks become
// KernelEmulationException with the details.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using FastAttention.Compilation;
using FastAttention.Runtime;

namespace FastAttention.Tests.Emulation;

/// <summary>The order in which the emulator runs the threads of a block between barriers.</summary>
internal enum EmulatorSchedule
{
    /// <summary>Thread 0 first: a thread that reads, before the next barrier, what a higher thread writes sees the poison.</summary>
    Forward,

    /// <summary>The last thread first: catches the mirror-image missing barrier.</summary>
    Reverse,
}

/// <summary>A failure of the emulator: g++ log, deadlock report, launch error or a PTX rule the kernel broke.</summary>
internal sealed class KernelEmulationException(string message) : Exception(message);

/// <summary>Compiles and caches emulated kernel programs.</summary>
internal static class KernelEmulator
{
    /// <summary>Set (to 1) by .ci/run: a missing g++ fails the emulated tests instead of ignoring them.</summary>
    public const string RequireVariable = "FASTATTN_REQUIRE_EMULATOR";

    /// <summary>Overrides the C++ compiler (default: g++ on PATH).</summary>
    public const string CompilerVariable = "FASTATTN_EMU_CXX";

    /// <summary>Overrides the folder of compiled programs (default: fastattention-emu under the temp folder).</summary>
    public const string CacheVariable = "FASTATTN_EMU_CACHE";

    /// <summary><c>reverse</c> makes <see cref="EmulatorSchedule.Reverse"/> the default schedule of every launch.</summary>
    public const string ScheduleVariable = "FASTATTN_EMU_SCHEDULE";

    /// <summary>The schedule launches use unless they name one.</summary>
    public static EmulatorSchedule DefaultSchedule { get; } =
        string.Equals(Environment.GetEnvironmentVariable(ScheduleVariable), "reverse", StringComparison.OrdinalIgnoreCase)
            ? EmulatorSchedule.Reverse : EmulatorSchedule.Forward;

    /// <summary>The g++ options (besides -D macros and file names).</summary>
    public static readonly string[] CompilerOptions =
        ["-std=c++17", "-O2", "-shared", "-fPIC", "-fno-strict-aliasing", "-fvisibility=hidden", "-fno-gnu-unique", "-w", "-DFA_EMULATE"];

    private static readonly ConcurrentDictionary<string, Lazy<EmulatedModule>> s_modules = new(StringComparer.Ordinal);
    private static readonly Lazy<(string? Version, string Reason)> s_compiler = new(ProbeCompiler);

    /// <summary>The emulator header (embedded from native/emu/fa_emu.h).</summary>
    public static string Header { get; } = ReadHeader();

    private static string Compiler => Environment.GetEnvironmentVariable(CompilerVariable) is { Length: > 0 } c ? c : "g++";

    /// <summary>Ignores the test (or fails it under CI) when no C++ compiler is usable.</summary>
    public static void Require()
    {
        if (s_compiler.Value.Version is not null) return;
        if (Environment.GetEnvironmentVariable(RequireVariable) == "1")
        {
            Assert.Fail($"The kernel emulator is required ({RequireVariable}=1) but {s_compiler.Value.Reason}");
        }
        Assert.Ignore($"The kernel emulator needs a C++ compiler: {s_compiler.Value.Reason}");
    }

    /// <summary>The emulated program of <paramref name="specialization"/>, compiled on first use.</summary>
    /// <exception cref="KernelEmulationException">The rewrite or g++ failed (the message holds the log).</exception>
    public static EmulatedModule Load(KernelSpecialization specialization)
    {
        ArgumentNullException.ThrowIfNull(specialization);
        string source = EmulatorSource.Build(Header, KernelSources.Program(specialization), specialization.KernelNames);
        string[] options = [.. CompilerOptions, .. specialization.DefineOptions];
        string key = Hash(source + "\n" + string.Join(' ', options) + "\n" + s_compiler.Value.Version);
        return s_modules.GetOrAdd(key, k => new Lazy<EmulatedModule>(() => Compile(specialization, source, options, k))).Value;
    }

    private static EmulatedModule Compile(KernelSpecialization specialization, string source, string[] options, string key)
    {
        string directory = Environment.GetEnvironmentVariable(CacheVariable) is { Length: > 0 } d
            ? d : Path.Combine(Path.GetTempPath(), "fastattention-emu");
        Directory.CreateDirectory(directory);
        string stem = Path.Combine(directory, $"{specialization.Name}-{key[..16]}");
        string library = stem + ".so";
        if (!File.Exists(library))
        {
            string unique = Guid.NewGuid().ToString("N");
            string cpp = $"{stem}.{unique}.cpp", temp = $"{stem}.{unique}.so";
            File.WriteAllText(cpp, source);
            var start = new ProcessStartInfo(Compiler) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (string o in options) start.ArgumentList.Add(o);
            start.ArgumentList.Add("-o");
            start.ArgumentList.Add(temp);
            start.ArgumentList.Add(cpp);
            using Process process = Process.Start(start) ?? throw new KernelEmulationException($"Cannot start {Compiler}.");
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            string log = process.StandardError.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                throw new KernelEmulationException(
                    $"g++ failed to compile the emulated {specialization} (exit {process.ExitCode}); source kept at {cpp}\n{stdout.Result}{log}");
            }
            File.Move(temp, library, overwrite: true);
            File.Move(cpp, stem + ".cpp", overwrite: true);
        }
        return new EmulatedModule(specialization, NativeLibrary.Load(library), library);
    }

    private static (string? Version, string Reason) ProbeCompiler()
    {
        try
        {
            var start = new ProcessStartInfo(Compiler, "--version") { RedirectStandardOutput = true, RedirectStandardError = true };
            using Process? p = Process.Start(start);
            if (p is null) return (null, $"{Compiler} could not be started");
            string version = p.StandardOutput.ReadToEnd();
            p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0 ? (version.Split('\n')[0].Trim(), "") : (null, $"{Compiler} --version exited with {p.ExitCode}");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (null, $"{Compiler} is not available ({e.Message})");
        }
    }

    private static string ReadHeader()
    {
        using Stream stream = Assembly.GetExecutingAssembly().GetManifestResourceStream("FastAttention.Tests.Emulation.fa_emu.h")
            ?? throw new InvalidOperationException("fa_emu.h is not embedded in the test assembly.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    private static string Hash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
}

/// <summary>A loaded emulated program: launches its kernels on the CPU.</summary>
internal sealed unsafe class EmulatedModule
{
    private const int ErrorLength = 8192;
    private readonly nint _library;
    private readonly ConcurrentDictionary<string, nint> _entries = new(StringComparer.Ordinal);

    internal EmulatedModule(KernelSpecialization specialization, nint library, string path)
    {
        Specialization = specialization;
        _library = library;
        LibraryPath = path;
    }

    /// <summary>The specialisation.</summary>
    public KernelSpecialization Specialization { get; }

    /// <summary>The compiled shared library.</summary>
    public string LibraryPath { get; }

    /// <summary>
    /// Runs <paramref name="kernel"/> over the whole grid and returns when it is done (blocks run one after another).
    /// Pointer arguments are host addresses.
    /// </summary>
    /// <param name="kernel">The kernel name.</param>
    /// <param name="config">Grid, block and dynamic shared memory.</param>
    /// <param name="arguments">The kernel's arguments, as for <see cref="CudaKernel.Launch"/>.</param>
    /// <param name="schedule">Thread order between barriers; null = <see cref="KernelEmulator.DefaultSchedule"/>.</param>
    /// <exception cref="ArgumentException">The kernel is not in the specialisation.</exception>
    /// <exception cref="KernelEmulationException">Launch configuration error, deadlock, or a PTX rule broken by the kernel.</exception>
    public void Launch(string kernel, in LaunchConfig config, scoped ref KernelArguments arguments, EmulatorSchedule? schedule = null)
    {
        if (!Specialization.KernelNames.Contains(kernel))
        {
            throw new ArgumentException($"Kernel {kernel} is not one of {string.Join(", ", Specialization.KernelNames)}.", nameof(kernel));
        }
        nint entry = _entries.GetOrAdd(kernel, k => NativeLibrary.GetExport(_library, "fa_emu_launch_" + k));
        uint* grid = stackalloc uint[3] { config.Grid.X, config.Grid.Y, config.Grid.Z };
        uint* block = stackalloc uint[3] { config.Block.X, config.Block.Y, config.Block.Z };
        int count = arguments.Count;
        void** pointers = stackalloc void*[Math.Max(count, 1)];
        arguments.FillPointers(pointers);
        byte* error = stackalloc byte[ErrorLength];
        error[0] = 0;
        int flags = (schedule ?? KernelEmulator.DefaultSchedule) == EmulatorSchedule.Reverse ? 1 : 0;
        var launch = (delegate* unmanaged<uint*, uint*, int, void**, int, int, byte*, int, int>)entry;
        int status = launch(grid, block, config.DynamicSharedMemoryBytes, pointers, count, flags, error, ErrorLength);
        if (status != 0)
        {
            throw new KernelEmulationException(Marshal.PtrToStringUTF8((nint)error) ?? $"emulated launch of {kernel} failed ({status})");
        }
    }
}
