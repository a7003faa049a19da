// CPU checks of the GPU decode's host contracts: launch-parameter structs laid out as the kernels' C structs (whose
// sizes the kernel files static_assert), option validation, supported head dims.
using System.Runtime.InteropServices;
using FastAttention.Compilation;
using FastAttention.Gpu;

namespace FastAttention.Tests.Gpu;

[TestFixture]
[Parallelizable(ParallelScope.All)]
public sealed class GpuDecodeContractTests
{
    [Test]
    public void ParameterStructsHaveTheKernelsLayout()
    {
        Assert.That(System.Runtime.CompilerServices.Unsafe.SizeOf<DecodeParams>(), Is.EqualTo(DecodeParams.Size).And.EqualTo(232));
        Assert.That(Marshal.OffsetOf<DecodeParams>(nameof(DecodeParams.QStrideB)), Is.EqualTo((nint)72));
        Assert.That(Marshal.OffsetOf<DecodeParams>(nameof(DecodeParams.PageStride)), Is.EqualTo((nint)152));
        Assert.That(Marshal.OffsetOf<DecodeParams>(nameof(DecodeParams.Batch)), Is.EqualTo((nint)160));
        Assert.That(Marshal.OffsetOf<DecodeParams>(nameof(DecodeParams.RowChunks)), Is.EqualTo((nint)208));
        Assert.That(Marshal.OffsetOf<DecodeParams>(nameof(DecodeParams.ScaleOverSoftcap)), Is.EqualTo((nint)224));
        Assert.That(System.Runtime.CompilerServices.Unsafe.SizeOf<KvAppendParams>(), Is.EqualTo(KvAppendParams.Size).And.EqualTo(120));
        Assert.That(Marshal.OffsetOf<KvAppendParams>(nameof(KvAppendParams.Entries)), Is.EqualTo((nint)96));
        Assert.That(System.Runtime.CompilerServices.Unsafe.SizeOf<KvCopyParams>(), Is.EqualTo(KvCopyParams.Size).And.EqualTo(48));
        Assert.That(Marshal.OffsetOf<KvCopyParams>(nameof(KvCopyParams.Count)), Is.EqualTo((nint)40));
        Assert.That(KernelSources.Read("paged_decode.cu"), Does.Contain($"sizeof(fa_decode_params) == {DecodeParams.Size}"));
        Assert.That(KernelSources.Read("kv_append.cu"), Does.Contain($"sizeof(fa_kv_append_params) == {KvAppendParams.Size}")
            .And.Contain($"sizeof(fa_kv_copy_params) == {KvCopyParams.Size}"));
    }

    /// <summary>Field by field, in order: C name in PascalCase and C type against the C# field's name and type.</summary>
    [TestCase("paged_decode.cu", "fa_decode_params", typeof(DecodeParams))]
    [TestCase("kv_append.cu", "fa_kv_append_params", typeof(KvAppendParams))]
    [TestCase("kv_append.cu", "fa_kv_copy_params", typeof(KvCopyParams))]
    public void ParameterStructFieldsMatchTheKernelsStructs(string file, string structName, Type mirror)
    {
        string source = KernelSources.Read(file);
        int start = source.IndexOf("struct " + structName, StringComparison.Ordinal);
        Assert.That(start, Is.GreaterThanOrEqualTo(0), $"struct {structName} in {file}");
        int open = source.IndexOf('{', start), close = source.IndexOf("};", open, StringComparison.Ordinal);
        string body = System.Text.RegularExpressions.Regex.Replace(source[(open + 1)..close], "//[^\n]*", "");
        var c = new List<string>();
        foreach (string declaration in body.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var m = System.Text.RegularExpressions.Regex.Match(declaration, @"^(?<type>(const\s+)?\w+\s*\*?)\s*(?<names>[\w\s,]+)$");
            Assert.That(m.Success, Is.True, $"unparsed declaration '{declaration}'");
            string type = m.Groups["type"].Value.Contains('*') ? "IntPtr" : m.Groups["type"].Value.Trim() switch
            {
                "fa_i64" => "Int64",
                "int" => "Int32",
                "float" => "Single",
                var other => other,
            };
            foreach (string name in m.Groups["names"].Value.Split(',', StringSplitOptions.TrimEntries))
            {
                c.Add(string.Concat(name.Split('_').Select(part => char.ToUpperInvariant(part[0]) + part[1..])) + " " + type);
            }
        }
        var cs = mirror.GetFields(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
            .OrderBy(f => Marshal.OffsetOf(mirror, f.Name))
            .Select(f => f.Name + " " + f.FieldType.Name);
        Assert.That(cs, Is.EqualTo(c), $"{mirror.Name} vs {structName}");
    }

    [Test]
    public void DecodeOptionsAreValidated()
    {
        Assert.That(new GpuDecodeOptions { Softcap = 30 }.Softcap, Is.EqualTo(30f));
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new GpuDecodeOptions { Softcap = -1 });
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new GpuDecodeOptions { Softcap = float.NaN });
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new GpuDecodeOptions { Splits = 0 });
        Assert.That(GpuDecodeOptions.Default.Kernel, Is.EqualTo(DecodeKernel.Tuned));
    }

    [Test]
    public void UnsupportedHeadDimsAreRefusedByName()
    {
        var e = Assert.Throws<ArgumentException>(() => KernelRegistry.PagedDecode(KernelElementType.Float16, 80))!;
        Assert.That(e.ParamName, Is.EqualTo("headDim"));
        Assert.That(e.Message, Does.Contain("80").And.Contain("64, 128, 256"));
        Assert.Throws<ArgumentException>(() => KernelRegistry.KvAppend(KernelElementType.Float32, 96));
        Assert.That(KernelRegistry.All.Count(s => s.SourceFile == "paged_decode.cu"), Is.EqualTo(9));
        Assert.That(KernelRegistry.All.Count(s => s.SourceFile == "kv_append.cu"), Is.EqualTo(9));
    }
}
