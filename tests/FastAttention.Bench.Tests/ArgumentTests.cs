// Argument parsing: valid command lines map to the right command, bad ones exit with 2 and say what is wrong.
namespace FastAttention.Bench.Tests;

[TestFixture]
public sealed class ArgumentTests
{
    [Test]
    public void NoArgumentsRunTheQuickBench() =>
        Assert.That(Cli.Normalise([]), Is.EqualTo(new[] { "bench", "--quick" }));

    [TestCase(new[] { "--threads", "2" }, new[] { "bench", "--quick", "--threads", "2" })]
    [TestCase(new[] { "--out", "x.md" }, new[] { "bench", "--quick", "--out", "x.md" })]
    [TestCase(new[] { "--full", "--only", "sgemm" }, new[] { "bench", "--full", "--only", "sgemm" })]
    [TestCase(new[] { "compare", "--quick" }, new[] { "compare", "--quick" })]
    [TestCase(new[] { "info" }, new[] { "info" })]
    [TestCase(new[] { "--help" }, new[] { "--help" })]
    public void TheOldOptionOnlySyntaxRunsBench(string[] args, string[] expected) =>
        Assert.That(Cli.Normalise(args), Is.EqualTo(expected));

    [TestCase("--help")]
    [TestCase("bench", "--help")]
    [TestCase("compare", "-h")]
    [TestCase("info", "--help")]
    public void HelpExitsZeroAndDescribesTheOptions(params string[] args)
    {
        var r = CliHarness.Run(args);
        Assert.That(r.ExitCode, Is.Zero, r.Error);
        Assert.That(r.Out, Does.Contain("Usage:"));
    }

    [TestCase("bogus", "Unrecognized command or argument 'bogus'")]
    [TestCase("bench --threads 0", "--threads must be at least 1")]
    [TestCase("bench --threads many", "many")]
    [TestCase("bench --only foo", "--only: unknown value 'foo'")]
    [TestCase("bench --only ,", "--only needs at least one of")]
    [TestCase("bench --dtype fp8", "--dtype: unknown value 'fp8'")]
    [TestCase("bench --seq 0", "--seq: '0' is not a whole number")]
    [TestCase("bench --seq 12,x", "--seq: 'x' is not a whole number")]
    [TestCase("compare --head-dim 1024", "--head-dim: '1024' is not a whole number in [1, 512]")]
    [TestCase("compare --backend gpu", "'gpu' not recognized")]
    [TestCase("bench --quick --smoke", "mutually exclusive")]
    [TestCase("bench --quick --full", "mutually exclusive")]
    [TestCase("compare --peers ort", "--peers: unknown value 'ort'")]
    [TestCase("compare --merge-json /nonexistent/x.json", "does not exist")]
    [TestCase("info --quick", "Unrecognized command or argument '--quick'")]
    [TestCase("--threads", "--threads")]
    public void BadArgumentsExitWithTwoAndAClearMessage(string commandLine, string message)
    {
        var r = CliHarness.Run(commandLine.Split(' '));
        Assert.That(r.ExitCode, Is.EqualTo(ExitCodes.BadArguments), r.Out + r.Error);
        Assert.That(r.Error, Does.Contain("error:").And.Contain(message));
        Assert.That(r.Error, Does.Contain("--help"), "points at the usage");
        Assert.That(r.Out, Is.Empty, "nothing ran");
    }

    [Test]
    public void AMalformedMergeFileIsABadArgument()
    {
        string dir = CliHarness.TempDir();
        try
        {
            string file = Path.Combine(dir, "bad.json");
            File.WriteAllText(file, """{ "schema": "something-else/9", "rows": [] }""");
            var r = CliHarness.Run("compare", "--smoke", "--merge-json", file);
            Assert.That(r.ExitCode, Is.EqualTo(ExitCodes.BadArguments));
            Assert.That(r.Error, Does.Contain("schema is 'something-else/9'"));

            File.WriteAllText(file, "not json");
            r = CliHarness.Run("compare", "--smoke", "--merge-json", file);
            Assert.That(r.ExitCode, Is.EqualTo(ExitCodes.BadArguments));
            Assert.That(r.Error, Does.Contain("not valid JSON"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Test]
    public void AnUnwritableOutputFileFailsWithOne()
    {
        string dir = CliHarness.TempDir();
        try
        {
            string blocker = Path.Combine(dir, "file");
            File.WriteAllText(blocker, "");
            // A folder cannot be created under a file.
            var r = CliHarness.Run("info", "--json", Path.Combine(blocker, "sub", "info.json"));
            Assert.That(r.ExitCode, Is.EqualTo(ExitCodes.Failed), r.Error);
            Assert.That(r.Error, Does.StartWith("error:"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
