// Where output goes: tables to stdout (Spectre tables on a terminal, markdown otherwise), progress and messages to stderr
// (Spectre progress bars on a terminal, plain "[bench] ..." lines otherwise).
using Spectre.Console;

namespace FastAttention.Bench.Output;

/// <summary>The process's standard streams and whether each is a terminal. Tests pass string writers.</summary>
/// <param name="Out">Tables (stdout).</param>
/// <param name="Error">Progress, warnings and errors (stderr).</param>
/// <param name="OutIsTerminal">Stdout is an interactive terminal: render Spectre tables.</param>
/// <param name="ErrorIsTerminal">Stderr is an interactive terminal: draw progress bars.</param>
internal sealed record CliConsole(TextWriter Out, TextWriter Error, bool OutIsTerminal, bool ErrorIsTerminal)
{
    /// <summary>The real console.</summary>
    public static CliConsole System => new(Console.Out, Console.Error,
        !Console.IsOutputRedirected && Environment.GetEnvironmentVariable("TERM") != "dumb",
        !Console.IsErrorRedirected && Environment.GetEnvironmentVariable("TERM") != "dumb");

    /// <summary>Prints a report block: a Spectre table on a terminal, markdown otherwise.</summary>
    public void Write(ReportTable table)
    {
        if (OutIsTerminal)
        {
            SpectreOut.Write(table.ToSpectre());
        }
        else
        {
            Out.Write(table.ToMarkdown());
            Out.Flush();
        }
    }

    /// <summary>A warning on stderr (always a plain line, also on a terminal).</summary>
    public void Warn(string message)
    {
        if (ErrorIsTerminal)
        {
            SpectreError.MarkupLine($"[yellow]warning:[/] {Markup.Escape(message)}");
        }
        else
        {
            Error.WriteLine($"warning: {message}");
            Error.Flush();
        }
    }

    private IAnsiConsole? _spectreOut, _spectreError;

    public IAnsiConsole SpectreOut => _spectreOut ??= AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(Out),
        Interactive = OutIsTerminal ? InteractionSupport.Yes : InteractionSupport.No,
        Ansi = OutIsTerminal ? AnsiSupport.Detect : AnsiSupport.No,
    });

    public IAnsiConsole SpectreError => _spectreError ??= AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(Error),
        Interactive = ErrorIsTerminal ? InteractionSupport.Yes : InteractionSupport.No,
        Ansi = ErrorIsTerminal ? AnsiSupport.Detect : AnsiSupport.No,
    });
}

/// <summary>
/// Progress of a run. On a terminal each section draws a Spectre progress bar (advanced once per finished
/// case, described by the last log line); otherwise every log line is printed to stderr as "[bench] ...".
/// </summary>
internal sealed class ProgressReporter(CliConsole console)
{
    /// <summary>Runs <paramref name="body"/> as one section of about <paramref name="steps"/> log lines.</summary>
    public T Section<T>(string name, int steps, Func<Action<string>, T> body)
    {
        if (!console.ErrorIsTerminal)
        {
            Log($"{name}...");
            return body(Log);
        }
        T result = default!;
        console.SpectreError.Progress()
            .AutoClear(true)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(name), maxValue: Math.Max(1, steps));
                result = body(line =>
                {
                    task.Description = Markup.Escape($"{name}: {Shorten(line)}");
                    if (task.Value < task.MaxValue - 1) task.Increment(1);
                });
                task.Value = task.MaxValue;
            });
        console.SpectreError.MarkupLine($"[green]done[/] {Markup.Escape(name)}");
        return result;
    }

    /// <summary>A plain progress line (also printed on a terminal, outside any bar).</summary>
    public void Log(string line)
    {
        if (console.ErrorIsTerminal)
        {
            console.SpectreError.MarkupLine($"[grey]{Markup.Escape(line)}[/]");
        }
        else
        {
            console.Error.WriteLine($"[bench] {line}");
            console.Error.Flush();
        }
    }

    private static string Shorten(string s) => s.Length <= 70 ? s : s[..67] + "...";
}
