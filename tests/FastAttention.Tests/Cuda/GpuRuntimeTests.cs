// GPU-only runtime checks (ignored, with the reason, where no CUDA device exists): memory round trips, pinned async
// copies, tensors, the utility kernels, the prelude smoke kernel against the CPU, events, streams, launch errors.
using FastAttention.Compilation;
using FastAttention.Runtime;
using FastAttention.Tests.Reference;

namespace FastAttention.Tests.Cuda;

[TestFixture]
[Category("Gpu")]
public sealed class GpuRuntimeTests : GpuFixture
{
    private TempDirectory _cacheDir = null!;
    private KernelCompiler _compiler = null!;

    [OneTimeSetUp]
    public void SetUp()
    {
        _cacheDir = new TempDirectory();
        _compiler = new KernelCompiler(new KernelCache(_cacheDir.Path));
        TestContext.Out.WriteLine($"{Context.Device}, driver {CudaDevice.DriverVersion}");
    }

    [OneTimeTearDown]
    public void TearDown() => _cacheDir?.Dispose();

    [Test]
    public void DevicePropertiesAreSane()
    {
        CudaDevice d = Context.Device;
        Assert.That(d.Name, Is.Not.Empty);
        Assert.That(d.MultiprocessorCount, Is.Positive);
        Assert.That(d.WarpSize, Is.EqualTo(32));
        Assert.That(d.SharedMemoryPerBlockOptInBytes, Is.GreaterThanOrEqualTo(d.SharedMemoryPerBlockBytes));
        Assert.That(d.SharedMemoryPerMultiprocessorBytes, Is.GreaterThanOrEqualTo(d.SharedMemoryPerBlockOptInBytes));
        Assert.That(d.ComputeCapability.Major, Is.GreaterThanOrEqualTo(5));
        var (free, total) = Context.GetMemoryInfo();
        Assert.That(total, Is.EqualTo(d.TotalMemoryBytes));
        Assert.That(free, Is.InRange(1, total));
        Assert.That(CudaDevice.GetAll()[0].Name, Is.EqualTo(d.Name));
        Assert.That(() => CudaDevice.Get(CudaDevice.Count), Throws.TypeOf<ArgumentOutOfRangeException>());
    }

    [TestCase(1)]
    [TestCase(1000)]
    [TestCase((1 << 20) + 3)]
    public void SynchronousRoundTripsAreExact(int length)
    {
        RoundTrip<float>(length);
        RoundTrip<Half>(length);
        RoundTrip<BFloat16>(length);
        RoundTrip<int>(length);
    }

    private void RoundTrip<T>(int length) where T : unmanaged
    {
        T[] host = RandomArray<T>(length, seed: (ulong)length);
        using var buffer = DeviceBuffer<T>.FromSpan(Context, host);
        Assert.That(buffer.SizeInBytes, Is.EqualTo((long)length * System.Runtime.CompilerServices.Unsafe.SizeOf<T>()));
        Assert.That(buffer.ToArray(), Is.EqualTo(host), typeof(T).Name);
    }

    [Test]
    public void AsyncCopiesThroughPinnedMemoryAndDeviceToDevice()
    {
        const int n = 1 << 18;
        using var stream = CudaStream.Create(Context);
        using var pinnedIn = PinnedHostBuffer<float>.Allocate(Context, n);
        using var pinnedOut = PinnedHostBuffer<float>.Allocate(Context, n);
        for (int i = 0; i < n; i++) pinnedIn.Span[i] = i * 0.5f;
        using var a = DeviceBuffer<float>.Allocate(Context, n);
        using var b = DeviceBuffer<float>.Allocate(Context, n);
        a.CopyFromAsync(pinnedIn, stream);
        b.CopyFrom(a, stream: stream);
        b.CopyToAsync(pinnedOut, stream);
        stream.Synchronize();
        Assert.That(stream.IsIdle, Is.True);
        Assert.That(pinnedOut.Span.ToArray(), Is.EqualTo(pinnedIn.Span.ToArray()));
    }

    [Test]
    public void ClearSliceAndOffsetsAddressTheRightElements()
    {
        using var buffer = DeviceBuffer<int>.FromSpan(Context, Enumerable.Range(1, 100).ToArray());
        using var stream = CudaStream.Create(Context);
        using (DeviceBuffer<int> middle = buffer.Slice(10, 20))
        {
            Assert.That(middle.OwnsMemory, Is.False);
            middle.ClearAsync(stream);
            stream.Synchronize();
        }
        buffer.CopyFrom([-1, -2], destinationOffset: 98);
        var part = new int[5];
        buffer.CopyTo(part, sourceOffset: 8);
        Assert.That(part, Is.EqualTo(new[] { 9, 10, 0, 0, 0 }));
        int[] all = buffer.ToArray();
        Assert.That(all[29], Is.Zero);
        Assert.That(all[30], Is.EqualTo(31));
        Assert.That(all[98..], Is.EqualTo(new[] { -1, -2 }));
        Assert.That(() => buffer.CopyTo(new int[10], sourceOffset: 95), Throws.TypeOf<ArgumentOutOfRangeException>());
        Assert.That(() => buffer.Slice(90, 11), Throws.TypeOf<ArgumentOutOfRangeException>());
        buffer.Clear();
        Assert.That(buffer.ToArray(), Is.All.Zero);
    }

    [Test]
    public void SynchronousCopiesAndClearAreCompleteForANonBlockingStream()
    {
        // A pageable cuMemcpyHtoD may return before its DMA is done, and cuMemsetD8 / cuMemcpyDtoD do not wait at
        // all; a non-blocking stream does not wait for the legacy stream. The synchronous methods must therefore be
        // complete on return, or the kernel below reads stale memory. Large buffers make the DMA window wide.
        const int n = 1 << 26;
        using var module = CudaModule.Load(Context, _compiler, KernelRegistry.Utility(KernelElementType.Float32));
        var kernels = new UtilityKernels<float>(module);
        using var stream = CudaStream.Create(Context);
        float[] host = new float[n];
        for (int i = 0; i < n; i++) host[i] = i % 1000 + 1;
        using var x = DeviceBuffer<float>.FromSpan(Context, host);
        using var y = DeviceBuffer<float>.Allocate(Context, n);
        kernels.Copy(stream, x, y);
        stream.Synchronize();
        float[] tail = new float[1 << 16];
        y.CopyTo(tail, n - tail.Length);
        Assert.That(tail, Is.EqualTo(host[^tail.Length..]), "upload complete before the kernel ran");

        x.Clear();
        kernels.Copy(stream, x, y);
        stream.Synchronize();
        y.CopyTo(tail, n - tail.Length);
        Assert.That(tail, Is.All.Zero, "clear complete before the kernel ran");

        using var z = DeviceBuffer<float>.FromSpan(Context, host);
        x.CopyFrom(z);
        kernels.Copy(stream, x, y);
        stream.Synchronize();
        y.CopyTo(tail, n - tail.Length);
        Assert.That(tail, Is.EqualTo(host[^tail.Length..]), "device-to-device copy complete before the kernel ran");
    }

    [Test]
    public void WrappedMemoryIsNotFreedByTheWrapper()
    {
        using var owner = DeviceBuffer<float>.FromSpan(Context, [1f, 2f, 3f]);
        var wrapper = DeviceBuffer<float>.Wrap(Context, owner.DevicePointer, 3);
        Assert.That(wrapper.ToArray(), Is.EqualTo(new[] { 1f, 2f, 3f }));
        wrapper.Dispose();
        Assert.That(() => wrapper.DevicePointer, Throws.TypeOf<ObjectDisposedException>());
        Assert.That(owner.ToArray(), Is.EqualTo(new[] { 1f, 2f, 3f }), "the owner's memory is intact");
        Assert.That(() => DeviceBuffer<float>.Wrap(Context, owner.DevicePointer + 2, 1), Throws.ArgumentException.With.Message.Contains("aligned"));
    }

    [Test]
    public void TensorsOwnOrWrapWithStrides()
    {
        const int b = 2, s = 3, h = 4, d = 8;
        float[] data = RandomArray<float>(b * s * h * d, 5);
        using var bshd = DeviceTensor<float>.AllocateBshd(Context, b, s, h, d);
        Assert.That(bshd.IsContiguous, Is.True);
        Assert.That(bshd.Strides.ToArray(), Is.EqualTo(new nint[] { s * h * d, h * d, d, 1 }));
        bshd.CopyFrom(data);
        var back = new float[data.Length];
        bshd.CopyTo(back);
        Assert.That(back, Is.EqualTo(data));

        using var view = DeviceTensor<float>.WrapBhsdAsBshd(Context, bshd.DevicePointer, b, s, h, d);
        Assert.That(view.OwnsMemory, Is.False);
        Assert.That(view.IsContiguous, Is.False);
        Assert.That(view.Lengths.ToArray(), Is.EqualTo(new nint[] { b, s, h, d }));
        Assert.That(view.Strides.ToArray(), Is.EqualTo(new nint[] { h * s * d, d, s * d, 1 }));
        Assert.That(view.Buffer.Length, Is.EqualTo(b * s * h * d), "the wrapped extent covers exactly the tensor");
        Assert.That(() => view.CopyFrom(data), Throws.InvalidOperationException.With.Message.Contains("not contiguous"));
        Assert.That(() => DeviceTensor<float>.Wrap(Context, bshd.DevicePointer, [2, 3], [1]), Throws.ArgumentException.With.Message.Contains("strides"));
    }

    [Test]
    public void ABufferIsUsableFromAnotherThread()
    {
        using var buffer = DeviceBuffer<float>.FromSpan(Context, [4f, 5f]);
        float[] result = Task.Run(buffer.ToArray).Result;
        Assert.That(result, Is.EqualTo(new[] { 4f, 5f }));
        float[] fromThread = [];
        var thread = new Thread(() => fromThread = buffer.ToArray());
        thread.Start();
        thread.Join();
        Assert.That(fromThread, Is.EqualTo(new[] { 4f, 5f }), "a fresh thread has no current context until the buffer binds it");
    }

    [Test]
    public void DisposingTheContextFirstLeavesChildrenSafeToDispose()
    {
        var context = CudaContext.Create(Context.Device);
        var buffer = DeviceBuffer<float>.Allocate(context, 16);
        var stream = CudaStream.Create(context);
        context.Dispose();
        Assert.That(() => context.MakeCurrent(), Throws.TypeOf<ObjectDisposedException>());
        Assert.DoesNotThrow(() =>
        {
            stream.Dispose();
            buffer.Dispose();
        });
        Assert.That(Context.GetMemoryInfo().TotalBytes, Is.Positive, "the shared primary context is still alive for others");
    }

    [TestCase(KernelElementType.Float32)]
    [TestCase(KernelElementType.Float16)]
    [TestCase(KernelElementType.BFloat16)]
    public void UtilityKernelsMatchTheCpu(KernelElementType type)
    {
        switch (type)
        {
            case KernelElementType.Float32: UtilityKernelsMatchTheCpu<float>(); break;
            case KernelElementType.Float16: UtilityKernelsMatchTheCpu<Half>(); break;
            default: UtilityKernelsMatchTheCpu<BFloat16>(); break;
        }
    }

    private void UtilityKernelsMatchTheCpu<T>() where T : unmanaged
    {
        const int n = 100_003;
        using var module = CudaModule.Load(Context, _compiler, KernelRegistry.Utility(KernelElementTypes.Of<T>()));
        var kernels = new UtilityKernels<T>(module);
        using var stream = CudaStream.Create(Context);
        T[] xHost = RandomArray<T>(n, 11), yHost = RandomArray<T>(n, 12);
        using var x = DeviceBuffer<T>.FromSpan(Context, xHost);
        using var y = DeviceBuffer<T>.FromSpan(Context, yHost);
        using var z = DeviceBuffer<T>.Allocate(Context, n);

        kernels.Axpy(stream, -0.5f, x, y);
        kernels.Copy(stream, y, z);
        stream.Synchronize();
        T[] expected = new T[n];
        for (int i = 0; i < n; i++) expected[i] = Num.FromFloat<T>(-0.5f * Num.ToFloat(xHost[i]) + Num.ToFloat(yHost[i]));
        Assert.That(z.ToArray(), Is.EqualTo(expected), "axpy then copy (alpha = -0.5 keeps the product exact, so FMA contraction cannot differ)");

        kernels.Fill(stream, 0.3f, z);
        stream.Synchronize();
        Assert.That(z.ToArray(), Is.All.EqualTo(Num.FromFloat<T>(0.3f)));
    }

    /// <summary>
    /// A kernel name the module lacks is the driver's CUDA_ERROR_NOT_FOUND. Apart from the kernel checks above because
    /// compute-sanitizer counts the failing driver call as an error, and the suite's sanitizer check runs those.
    /// </summary>
    [Test]
    public void AMissingKernelNameIsNotFound()
    {
        using var module = CudaModule.Load(Context, _compiler, KernelRegistry.Utility(KernelElementType.Float32));
        Assert.That(() => module.GetKernel("fa_no_such_kernel"), Throws.TypeOf<CudaException>().With.Property(nameof(CudaException.ErrorName)).EqualTo("CUDA_ERROR_NOT_FOUND"));
    }

    /// <summary>
    /// The ptxas report of a CUBIN compile agrees with what the driver reports for the loaded kernel. Kept apart from the
    /// kernel checks above: under compute-sanitizer NVRTC returns an empty log (seen on an H200, NVRTC 13.0), so there
    /// is no report to compare, and the suite's sanitizer check runs those instead.
    /// </summary>
    [Test]
    public void CompileReportAgreesWithTheDriver()
    {
        using var module = CudaModule.Load(Context, _compiler, KernelRegistry.Utility(KernelElementType.Float32));
        CudaKernel fill = module.GetKernel("fa_fill_f32");
        CompiledModule compiled = module.Compiled;
        if (compiled.Target.Kind != KernelImageKind.Cubin)
        {
            Assert.Ignore($"{compiled}: this NVRTC cannot build CUBIN for the device, and a PTX module has no ptxas report.");
        }
        Assert.That(fill.CompileReport, Is.Not.Null, () =>
            $"no ptxas report for {fill.Name}: {compiled} ({compiled.Origin}); options {string.Join(' ', compiled.Options)}; log:\n{compiled.Log}");
        KernelFunctionAttributes attributes = fill.Attributes;
        Assert.That(attributes.Registers, Is.EqualTo(fill.CompileReport!.Registers), "driver and ptxas agree");
        Assert.That(attributes.LocalMemoryBytes, Is.Zero);
        Assert.That(attributes.MaxThreadsPerBlock, Is.GreaterThanOrEqualTo(256));
    }

    [TestCase(KernelElementType.Float16)]
    [TestCase(KernelElementType.BFloat16)]
    public void PreludeSmokeKernelMatchesTheCpu(KernelElementType type)
    {
        if (type == KernelElementType.Float16) PreludeSmoke<Half>(type);
        else PreludeSmoke<BFloat16>(type);
    }

    private void PreludeSmoke<T>(KernelElementType type) where T : unmanaged
    {
        if (Context.Device.ComputeCapability.Major < 8) Assert.Ignore("mma.sync m16n8k16 with bf16 and cp.async need sm_80.");
        var c = new PreludeSmokeCase();

        using var module = CudaModule.Load(Context, _compiler, KernelRegistry.PreludeSmoke(type));
        CudaKernel kernel = module.GetKernel($"fa_prelude_smoke_mma_{type.Suffix()}");
        using var dA = DeviceBuffer<T>.FromSpan(Context, c.A.Select(Num.FromFloat<T>).ToArray());
        using var dBnk = DeviceBuffer<T>.FromSpan(Context, c.Bnk.Select(Num.FromFloat<T>).ToArray());
        using var dBkn = DeviceBuffer<T>.FromSpan(Context, c.Bkn.Select(Num.FromFloat<T>).ToArray());
        using var dNk = DeviceBuffer<float>.Allocate(Context, 128);
        using var dKn = DeviceBuffer<float>.Allocate(Context, 128);
        using var dRound = DeviceBuffer<float>.Allocate(Context, 128);
        using var rowSum = DeviceBuffer<float>.Allocate(Context, 16);
        using var stats = DeviceBuffer<float>.Allocate(Context, 2);
        using var stream = CudaStream.Create(Context);
        var args = new KernelArguments();
        foreach (nint p in (nint[])[dA.DevicePointer, dBnk.DevicePointer, dBkn.DevicePointer, dNk.DevicePointer, dKn.DevicePointer,
                     dRound.DevicePointer, rowSum.DevicePointer, stats.DevicePointer])
        {
            args.Add(p);
        }
        kernel.Launch(new LaunchConfig(1, 32), stream, ref args);
        stream.Synchronize();

        c.AssertOutputs<T>(dNk.ToArray(), dKn.ToArray(), dRound.ToArray(), rowSum.ToArray(), stats.ToArray());
    }

    [Test]
    public void EventsTimeWorkAndOrderStreams()
    {
        const int n = 1 << 24;
        using var module = CudaModule.Load(Context, _compiler, KernelRegistry.Utility(KernelElementType.Float32));
        var kernels = new UtilityKernels<float>(module);
        using var s1 = CudaStream.Create(Context);
        using var s2 = CudaStream.Create(Context);
        using var start = CudaEvent.Create(Context);
        using var done = CudaEvent.Create(Context);
        using var x = DeviceBuffer<float>.Allocate(Context, n);
        using var y = DeviceBuffer<float>.Allocate(Context, n);
        y.Clear();
        Context.Synchronize();

        start.Record(s1);
        kernels.Fill(s1, 1f, x);
        done.Record(s1);
        s2.Wait(done);
        kernels.Copy(s2, x, y);
        s2.Synchronize();
        Assert.That(done.IsCompleted, Is.True);
        float ms = CudaEvent.ElapsedMilliseconds(start, done);
        TestContext.Out.WriteLine($"fill of {n} floats: {ms:F3} ms ({n * 4 / (ms * 1e6):F0} GB/s)");
        Assert.That(ms, Is.InRange(0f, 10_000f));
        float[] tail = new float[1000];
        y.CopyTo(tail, n - 1000);
        Assert.That(tail, Is.All.EqualTo(1f), "s2 waited for s1's fill");

        using var untimed = CudaEvent.Create(Context, enableTiming: false);
        untimed.Record(s1);
        untimed.Synchronize();
        Assert.That(() => CudaEvent.ElapsedMilliseconds(start, untimed), Throws.ArgumentException);
    }

    [Test]
    public void LaunchErrorsAreReportedWithTheCall()
    {
        using var module = CudaModule.Load(Context, _compiler, KernelRegistry.Utility(KernelElementType.Float32));
        CudaKernel fill = module.GetKernel("fa_fill_f32");
        using var stream = CudaStream.Create(Context);
        using var x = DeviceBuffer<float>.Allocate(Context, 16);
        var args = new KernelArguments();
        args.Add(x.DevicePointer);
        args.Add(1f);
        args.Add(16L);
        CudaException? tooLarge = null;
        try
        {
            fill.Launch(new LaunchConfig(1, 4096), stream, ref args);
        }
        catch (CudaException e)
        {
            tooLarge = e;
        }
        Assert.That(tooLarge, Is.Not.Null, "a 4096-thread block is rejected");
        Assert.That(tooLarge!.Call, Does.Contain("cuLaunchKernel"));
        Assert.That(tooLarge.ErrorName, Does.StartWith("CUDA_ERROR_"));
        bool rejected = false;
        try
        {
            fill.Launch(new LaunchConfig(0, 32), stream, ref args);
        }
        catch (ArgumentException)
        {
            rejected = true;
        }
        Assert.That(rejected, Is.True, "an empty grid is rejected before the driver");
    }

    [Test]
    public void DynamicSharedMemoryCanBeRaisedToTheOptInLimit()
    {
        using var module = CudaModule.Load(Context, _compiler, KernelRegistry.Utility(KernelElementType.Float32));
        CudaKernel fill = module.GetKernel("fa_fill_f32");
        int limit = Context.Device.SharedMemoryPerBlockOptInBytes - fill.Attributes.StaticSharedMemoryBytes;
        fill.SetMaxDynamicSharedMemory(limit);
        Assert.That(fill.Attributes.MaxDynamicSharedMemoryBytes, Is.EqualTo(limit));
        Assert.That(() => fill.SetMaxDynamicSharedMemory(Context.Device.SharedMemoryPerBlockOptInBytes + 1), Throws.TypeOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void PtxIsJitCompiledByTheDriver()
    {
        NvrtcInfo nvrtc = CudaTestSupport.RequireNvrtc();
        var target = CompileTarget.Ptx(CompileTarget.ForDevice(Context.Device.ComputeCapability, nvrtc.SupportedArchitectures).Architecture);
        using var module = CudaModule.Load(Context, _compiler.Compile(KernelRegistry.Utility(KernelElementType.Float32), target));
        var kernels = new UtilityKernels<float>(module);
        using var stream = CudaStream.Create(Context);
        using var x = DeviceBuffer<float>.Allocate(Context, 1000);
        kernels.Fill(stream, 2.5f, x);
        stream.Synchronize();
        Assert.That(x.ToArray(), Is.All.EqualTo(2.5f));
        Assert.That(module.GetKernel("fa_fill_f32").CompileReport, Is.Null);
        Assert.That(module.GetKernel("fa_fill_f32").Attributes.PtxVersion, Is.Positive);
    }

    [Test]
    public void ACubinForAnotherArchitectureIsRejectedByTheDriver()
    {
        NvrtcInfo nvrtc = CudaTestSupport.RequireNvrtc();
        ComputeCapability device = Context.Device.ComputeCapability;
        ComputeCapability? other = nvrtc.SupportedArchitectures.Where(a => a.Major != device.Major && a.Major >= 5).Cast<ComputeCapability?>().LastOrDefault();
        if (other is null) Assert.Ignore("NVRTC supports no architecture of another major version.");
        CompiledModule wrong = _compiler.Compile(KernelRegistry.Utility(KernelElementType.Float32), CompileTarget.Cubin(other!.Value));
        var e = Assert.Throws<CudaException>(() => CudaModule.Load(Context, wrong))!;
        Assert.That(e.Call, Does.Contain("cuModuleLoadDataEx").And.Contain("utility_f32"));
    }

    internal static T[] RandomArray<T>(int length, ulong seed) where T : unmanaged
    {
        var rng = new Rng(seed);
        var result = new T[length];
        if (typeof(T) == typeof(int))
        {
            var ints = (int[])(object)result;
            for (int i = 0; i < length; i++) ints[i] = (int)rng.NextULong();
            return result;
        }
        for (int i = 0; i < length; i++) result[i] = Num.FromFloat<T>((float)rng.NextNormal());
        return result;
    }
}

/// <summary>Launches the utility kernels of a loaded utility module (grid-stride, 256 threads a block).</summary>
internal sealed class UtilityKernels<T>(CudaModule module) where T : unmanaged
{
    private readonly string _suffix = KernelElementTypes.Of<T>().Suffix();

    public void Fill(CudaStream stream, float value, DeviceBuffer<T> output)
    {
        var args = new KernelArguments();
        args.Add(output.DevicePointer);
        args.Add(value);
        args.Add(output.Length);
        Launch("fa_fill", output.Length, stream, ref args);
    }

    public void Copy(CudaStream stream, DeviceBuffer<T> input, DeviceBuffer<T> output)
    {
        var args = new KernelArguments();
        args.Add(input.DevicePointer);
        args.Add(output.DevicePointer);
        args.Add(input.Length);
        Launch("fa_copy", input.Length, stream, ref args);
    }

    public void Axpy(CudaStream stream, float alpha, DeviceBuffer<T> x, DeviceBuffer<T> y)
    {
        var args = new KernelArguments();
        args.Add(alpha);
        args.Add(x.DevicePointer);
        args.Add(y.DevicePointer);
        args.Add(x.Length);
        Launch("fa_axpy", x.Length, stream, ref args);
    }

    private void Launch(string name, long n, CudaStream stream, ref KernelArguments args)
    {
        int maxBlocks = module.Context.Device.MultiprocessorCount * 8;
        uint blocks = (uint)Math.Clamp((n + 255) / 256, 1, maxBlocks);
        module.GetKernel($"{name}_{_suffix}").Launch(new LaunchConfig(blocks, 256), stream, ref args);
    }
}
