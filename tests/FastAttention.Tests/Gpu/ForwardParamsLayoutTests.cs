// The C# mirror of fa_fwd_params must have the C struct's layout: each forward kernel source (the struct itself is in
// the prelude, common.cuh) is compiled to PTX (NVRTC, no GPU) with -DFA_LAYOUT_CHECK, which emits a table of the C
// offsets and the size as the initializer of a global; the test reads it back from the PTX and compares it with
// Marshal.OffsetOf.
using System.Globalization;
using System.Text.RegularExpressions;
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Tests.Cuda;

namespace FastAttention.Tests.Gpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class ForwardParamsLayoutTests
{
    private static readonly KernelCompiler s_compiler = new(new KernelCache(null));

    private static IEnumerable<TestCaseData> Sources() =>
        KernelRegistry.All.Where(s => s.SourceFile.StartsWith("attention_fwd", StringComparison.Ordinal))
            .GroupBy(s => s.SourceFile).Select(g => g.First())
            .Select(s => new TestCaseData(s).SetName($"LayoutMatches({s.SourceFile})"));

    [TestCaseSource(nameof(Sources))]
    public void LayoutMatches(KernelSpecialization spec)
    {
        CudaTestSupport.RequireNvrtc();
        var defines = new Dictionary<string, string>(spec.Defines) { ["FA_LAYOUT_CHECK"] = "1" };
        var check = new KernelSpecialization(spec.Name + "_layout", spec.SourceFile, spec.KernelNames, defines);
        CompiledModule module = s_compiler.Compile(check, CompileTarget.Ptx(new(8, 0)));
        string ptx = System.Text.Encoding.ASCII.GetString(module.Image.Span).TrimEnd('\0');
        Match m = Regex.Match(ptx, @"fa_fwd_params_layout\[(\d+)\] = \{([^}]*)\}");
        Assert.That(m.Success, Is.True, "the PTX holds the layout table");
        byte[] bytes = m.Groups[2].Value.Split(',').Select(x => byte.Parse(x.Trim(), CultureInfo.InvariantCulture)).ToArray();
        var c = Enumerable.Range(0, bytes.Length / 8).Select(i => BitConverter.ToInt64(bytes, i * 8)).ToArray();
        var cs = AttentionForwardParams.Layout();
        Assert.That(c, Is.EqualTo(cs), "C offsets (then size) vs the C# struct, field by field in AttentionForwardParams.CFields order: " +
            string.Join(", ", AttentionForwardParams.CFields.Select((f, i) => $"{f.CName} {(i < c.Length ? c[i] : -1)}/{cs[i]}")));
    }

    [Test]
    public void EveryFieldIsListedOnce()
    {
        var fields = typeof(AttentionForwardParams).GetFields(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
            .Select(f => f.Name);
        Assert.That(AttentionForwardParams.CFields.Select(f => f.Field), Is.EqualTo(fields));
        Assert.That(AttentionForwardParams.CFields.Select(f => f.CName), Is.Unique);
        Assert.That(AttentionForwardParams.Layout(), Is.Ordered.And.Unique, "offsets increase in declaration order");
    }
}
