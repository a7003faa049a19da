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
