// Entry point of the benchmark and inspection CLI.
//
//   dotnet run -c Release --project perf/FastAttention.Bench                      bench --quick (about a minute, CPU)
//   dotnet run -c Release --project perf/FastAttention.Bench -- info              machine, CUDA libraries, backend choice
//   dotnet run -c Release --project perf/FastAttention.Bench -- bench             the thorough suite
//   dotnet run -c Release --project perf/FastAttention.Bench -- compare --quick   FastAttention vs ONNX Runtime and a naive baseline
//
// Tables go to stdout (Spectre tables on a terminal, markdown otherwise); progress to stderr. Exit codes: 0 ok,
// 1 a run failed, 2 bad arguments. See perf/README.md for every option and the JSON/CSV schema.
using FastAttention.Bench.Output;

namespace FastAttention.Bench;

internal static class Program
{
    public static int Main(string[] args) => Cli.Run(args, CliConsole.System);
}
