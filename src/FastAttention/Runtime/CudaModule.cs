// A compiled module loaded into a context (CUBIN, or PTX the driver JIT-compiles), and lookup of its kernels.
using System.Collections.Concurrent;
using System.Text;
using FastAttention.Compilation;
using FastAttention.Interop;

namespace FastAttention.Runtime;

/// <summary>A <see cref="CompiledModule"/> loaded into a context; hands out its kernels.</summary>
public sealed class CudaModule : IDisposable
{
    private const int JitLogBytes = 16 * 1024;
    private readonly CudaResourceHandle _handle;
    private readonly ConcurrentDictionary<string, CudaKernel> _kernels = new(StringComparer.Ordinal);

    private CudaModule(CudaContext context, CompiledModule compiled, CudaResourceHandle handle)
    {
        Context = context;
        Compiled = compiled;
        _handle = handle;
    }

    /// <summary>The context the module is loaded in.</summary>
    public CudaContext Context { get; }

    /// <summary>What was loaded (image, log, ptxas resource usage).</summary>
    public CompiledModule Compiled { get; }

    /// <summary>The raw <c>CUmodule</c>.</summary>
    /// <exception cref="ObjectDisposedException">The module was unloaded.</exception>
    public nint Handle => _handle.Get(this);

    /// <summary>Loads <paramref name="compiled"/> into <paramref name="context"/>.</summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="ObjectDisposedException">The context was disposed.</exception>
    /// <exception cref="CudaException">
    /// The driver rejected the image (e.g. CUDA_ERROR_NO_BINARY_FOR_GPU for a CUBIN of another architecture,
    /// CUDA_ERROR_UNSUPPORTED_PTX_VERSION for PTX newer than the driver); <see cref="CudaException.Detail"/> holds the JIT log.
    /// </exception>
    public static unsafe CudaModule Load(CudaContext context, CompiledModule compiled)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(compiled);
        byte[] image = compiled.Image.ToArray();
        if (compiled.Target.Kind == KernelImageKind.Ptx && (image.Length == 0 || image[^1] != 0))
        {
            Array.Resize(ref image, image.Length + 1);
        }
        byte[] errorLog = new byte[JitLogBytes];
        var handle = context.Own(CudaResourceKind.Module, () =>
        {
            CuJitOption* options = stackalloc CuJitOption[] { CuJitOption.ErrorLogBuffer, CuJitOption.ErrorLogBufferSizeBytes };
            fixed (byte* imagePointer = image)
            fixed (byte* logPointer = errorLog)
            {
                void** values = stackalloc void*[] { logPointer, (void*)(nint)JitLogBytes };
                CuResult result = CudaDriver.cuModuleLoadDataEx(out nint module, imagePointer, 2, options, values);
                if (result != CuResult.Success)
                {
                    string log = Encoding.UTF8.GetString(errorLog).TrimEnd('\0').Trim();
                    throw NativeStatus.CudaError(result, $"cuModuleLoadDataEx({compiled})", log.Length > 0 ? "JIT log:\n" + log : null);
                }
                return module;
            }
        });
        return new CudaModule(context, compiled, handle);
    }

    /// <summary>Compiles (or fetches from the cache) <paramref name="specialization"/> for the context's device and loads it.</summary>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="DllNotFoundException">NVRTC cannot be loaded.</exception>
    /// <exception cref="NotSupportedException">NVRTC cannot compile for the device.</exception>
    /// <exception cref="NvrtcCompilationException">Compilation failed.</exception>
    /// <exception cref="CudaException">The driver rejected the image.</exception>
    public static CudaModule Load(CudaContext context, KernelCompiler compiler, KernelSpecialization specialization)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(compiler);
        return Load(context, compiler.Compile(specialization, context.Device));
    }

    /// <summary>The kernel named <paramref name="name"/> (the same object on every call).</summary>
    /// <exception cref="ArgumentException"><paramref name="name"/> is empty.</exception>
    /// <exception cref="ObjectDisposedException">The module was unloaded.</exception>
    /// <exception cref="CudaException">The module has no such kernel (CUDA_ERROR_NOT_FOUND).</exception>
    public CudaKernel GetKernel(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return _kernels.GetOrAdd(name, n =>
        {
            nint module = Handle;
            Context.MakeCurrent();
            CuResult result = CudaDriver.cuModuleGetFunction(out nint function, module, n);
            if (result != CuResult.Success)
            {
                throw NativeStatus.CudaError(result, $"cuModuleGetFunction({n})",
                    $"Module {Compiled.Specialization.Name} defines {string.Join(", ", Compiled.Specialization.KernelNames)}.");
            }
            Compiled.ResourceUsage.TryGetValue(n, out KernelResourceUsage? usage);
            return new CudaKernel(this, n, function, usage);
        });
    }

    /// <summary>Unloads the module. Kernels of it already queued must have finished (the driver does not document waiting for them).</summary>
    public void Dispose() => _handle.Dispose();
}
