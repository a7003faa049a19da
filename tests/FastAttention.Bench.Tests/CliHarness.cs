// Runs the CLI in this process with captured, non-terminal output (markdown tables, plain progress lines).
using FastAttention.Bench.Output;

namespace FastAttention.Bench.Tests;

internal sealed record CliResult(int ExitCode, string Out, string Error);

internal static class CliHarness
{
    public static CliResult Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = Cli.Run(args, new CliConsole(stdout, stderr, OutIsTerminal: false, ErrorIsTerminal: false));
        return new CliResult(code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>A fresh temporary folder, deleted by the caller's TearDown.</summary>
    public static string TempDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "fa-bench-tests-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }
}
