// The GPU timings of `gpu`: CUDA events around each call after warm-ups, median of N. Device buffers are allocated
// once per element type at the largest size and viewed with the shape of each case (batch · seq is constant).
using FastAttention.Bench.Output;
using FastAttention.Compilation;
using FastAttention.Gpu;
using FastAttention.Runtime;

namespace FastAttention.Bench.Gpu;

internal sealed class GpuBench
{
    private readonly CudaContext _context;
    private readonly CudaStream _stream;
    private readonly bool _quick;
    private readonly TextWriter _log;
    private readonly double? _peakGbs;
    private readonly Dictionary<(string Case, string Impl), double> _medians = [];

    public GpuBench(CudaContext context, CudaStream stream, bool quick, TextWriter log, double? peakGbs)
    {
        _context = context;
        _stream = stream;
        _quick = quick;
        _log = log;
        _peakGbs = peakGbs;
    }

    private int Warmups => 2;
    private int Reps => _quick ? 5 : 10;

    /// <summary>Device-to-device copy of 1 GiB: the measured HBM ceiling next to the theoretical peak.</summary>
    public IEnumerable<ResultRow> Copy()
    {
        const long bytes = 1L << 30;
        using var a = DeviceBuffer<byte>.Allocate(_context, bytes);
        using var b = DeviceBuffer<byte>.Allocate(_context, bytes);
        a.ClearAsync(_stream);
        var m = Time(() => b.CopyFrom(a, 0, _stream));
        yield return Bandwidth(new ResultRow { Section = "copy", Case = "copy d2d 1GiB", Impl = "cuMemcpyDtoD", Params = "read + write" }, m, 2.0 * bytes);
    }

    /// <summary>The forward sweep, tuned and plain (plain up to <see cref="GpuCases.PlainMaxSeq"/>).</summary>
    public IEnumerable<ResultRow> Forward()
    {
        var rows = new List<ResultRow>();
        foreach (var group in GpuCases.Forward(_quick).GroupBy(c => c.Dtype))
        {
            if (group.Key == "fp16") rows.AddRange(ForwardOf<Half>([.. group]));
            else rows.AddRange(ForwardOf<BFloat16>([.. group]));
        }
        return rows;
    }

    private List<ResultRow> ForwardOf<T>(IReadOnlyList<GpuForwardCase> cases) where T : unmanaged
    {
        var rows = new List<ResultRow>();
        long elements = (long)GpuCases.Tokens * GpuCases.Hidden;
        using var q = Random<T>(elements, 1);
        using var k = Random<T>(elements, 2);
        using var v = Random<T>(elements, 3);
        using var o = DeviceBuffer<T>.Allocate(_context, elements);
        using var attention = new CudaAttention(_context);
        foreach (GpuForwardCase c in cases)
        {
            using var qt = View(q, c.Batch, c.Seq, c.Heads, c.HeadDim);
            using var kt = View(k, c.Batch, c.Seq, c.Heads, c.HeadDim);
            using var vt = View(v, c.Batch, c.Seq, c.Heads, c.HeadDim);
            using var ot = View(o, c.Batch, c.Seq, c.Heads, c.HeadDim);
            var options = new AttentionOptions { Mask = c.Causal ? AttentionMask.CausalMask : AttentionMask.None };
            foreach (CudaKernelVariant variant in new[] { CudaKernelVariant.Tuned, CudaKernelVariant.Plain })
            {
                if (variant == CudaKernelVariant.Plain && c.Seq > (_quick ? 1024 : GpuCases.PlainMaxSeq)) continue;
                attention.Variant = variant;
                _log.WriteLine($"[gpu] {c.Name} {variant}");
                var m = Time(() => attention.Forward(qt, kt, vt, ot, options, stream: _stream));
                string impl = variant == CudaKernelVariant.Tuned ? "fastattention" : "fastattention-plain";
                rows.Add(Throughput(Row("forward", c.Name, impl, c.Dtype, c.Batch, c.Seq, c.Heads, c.HeadDim, c.Causal)
                    with { Params = attention.LastKernelName }, m, c.Flops));
            }
        }
        return rows;
    }

    /// <summary>Block-sparse (12.5% of the blocks, the same count in every row) vs the dense forward of the same shape.</summary>
    public IEnumerable<ResultRow> Sparse()
    {
        var rows = new List<ResultRow>();
        foreach (GpuSparseCase c in GpuCases.Sparse(_quick))
        {
            rows.AddRange(c.Dtype == "fp16" ? SparseOf<Half>(c) : SparseOf<BFloat16>(c));
        }
        return rows;
    }

    private List<ResultRow> SparseOf<T>(GpuSparseCase c) where T : unmanaged
    {
        long elements = (long)c.Batch * c.Seq * c.Heads * c.HeadDim;
        using var q = Random<T>(elements, 4);
        using var k = Random<T>(elements, 5);
        using var v = Random<T>(elements, 6);
        using var o = DeviceBuffer<T>.Allocate(_context, elements);
        using var qt = View(q, c.Batch, c.Seq, c.Heads, c.HeadDim);
        using var kt = View(k, c.Batch, c.Seq, c.Heads, c.HeadDim);
        using var vt = View(v, c.Batch, c.Seq, c.Heads, c.HeadDim);
        using var ot = View(o, c.Batch, c.Seq, c.Heads, c.HeadDim);
        using var attention = new CudaAttention(_context);
        BlockSparseMask mask = c.Mask();
        var sparse = new AttentionOptions { Mask = new AttentionMask { BlockMask = mask } };
        _log.WriteLine($"[gpu] {c.Name}");
        var dense = Time(() => attention.Forward(qt, kt, vt, ot, AttentionOptions.Default, stream: _stream));
        var ms = Time(() => attention.Forward(qt, kt, vt, ot, sparse, stream: _stream));
        var denseRow = Throughput(Row("sparse", c.Dense.Name, "fastattention", c.Dtype, c.Batch, c.Seq, c.Heads, c.HeadDim, false)
            with { Density = 1.0, Params = "dense baseline" }, dense, c.Dense.Flops);
        var sparseRow = Throughput(Row("sparse", c.Name, "fastattention", c.Dtype, c.Batch, c.Seq, c.Heads, c.HeadDim, false)
            with { Density = mask.Density, Params = $"strided {c.BlockSize}x{c.BlockSize} blocks, every {c.Stride}th key block", Speedup = dense.MedianMs / ms.MedianMs },
            ms, c.Dense.Flops * mask.Density);
        return [denseRow, sparseRow];
    }

    /// <summary>The fused softmax, tuned and plain: GB/s (one read, one write) and % of peak HBM.</summary>
    public IEnumerable<ResultRow> Softmax()
    {
        var rows = new List<ResultRow>();
        using var softmax = new CudaSoftmax(_context);
        foreach (GpuSoftmaxCase c in GpuCases.Softmax(_quick))
        {
            rows.AddRange(c.Dtype == "fp16" ? SoftmaxOf<Half>(softmax, c) : SoftmaxOf<float>(softmax, c));
        }
        return rows;
    }

    private List<ResultRow> SoftmaxOf<T>(CudaSoftmax softmax, GpuSoftmaxCase c) where T : unmanaged
    {
        var rows = new List<ResultRow>();
        long elements = (long)c.Batch * c.Heads * c.SeqQ * c.SeqK;
        using var x = Random<T>(elements, 7);
        using var y = DeviceBuffer<T>.Allocate(_context, elements);
        nint[] lengths = [c.Batch, c.Heads, c.SeqQ, c.SeqK];
        nint[] strides = [(nint)c.Heads * c.SeqQ * c.SeqK, (nint)c.SeqQ * c.SeqK, c.SeqK, 1];
        using var xt = DeviceTensor<T>.Wrap(_context, x.DevicePointer, lengths, strides);
        using var yt = DeviceTensor<T>.Wrap(_context, y.DevicePointer, lengths, strides);
        foreach (CudaKernelVariant variant in new[] { CudaKernelVariant.Tuned, CudaKernelVariant.Plain })
        {
            softmax.Variant = variant;
            _log.WriteLine($"[gpu] {c.Name} {variant}");
            var m = Time(() => softmax.Run(xt, yt, 0.125f, null, _stream));
            rows.Add(Bandwidth(new ResultRow
            {
                Section = "softmax", Case = c.Name, Impl = variant == CudaKernelVariant.Tuned ? "fastattention" : "fastattention-plain",
                Dtype = c.Dtype, Batch = c.Batch, Heads = c.Heads, SeqQ = c.SeqQ, SeqK = c.SeqK, Params = "read + write",
            }, m, c.Bytes));
        }
        return rows;
    }

    /// <summary>
    /// Paged decode (tuned and plain) on the issue-6 shapes and the batched KV append: GB/s of K and V read once
    /// (decode) or moved (append: read the new tokens, write them into their pages), and % of peak HBM. Timings include
    /// the host's per-call work (block-table packing and upload), as a serving loop pays it.
    /// </summary>
    public IEnumerable<ResultRow> Decode()
    {
        var rows = new List<ResultRow>();
        foreach (GpuDecodeCase c in GpuCases.Decode(_quick))
        {
            int chunk = Math.Min(c.Context, Math.Max(c.PageSize, GpuCases.Tokens / c.Batch));
            long pages = (long)c.Batch * (c.Context + chunk) / c.PageSize + c.Batch;
            using var cache = new CudaPagedKvCache<Half>(_context, checked((int)pages), c.PageSize, c.KvHeads, c.HeadDim);
            int[] sequences = [.. Enumerable.Range(0, c.Batch).Select(_ => cache.CreateSequence())];
            long chunkElements = (long)c.Batch * chunk * c.KvHeads * c.HeadDim;
            using var newKeys = Random<Half>(chunkElements, 11);
            using var newValues = Random<Half>(chunkElements, 12);
            using var keys = DeviceTensor<Half>.WrapBshd(_context, newKeys.DevicePointer, c.Batch, chunk, c.KvHeads, c.HeadDim);
            using var values = DeviceTensor<Half>.WrapBshd(_context, newValues.DevicePointer, c.Batch, chunk, c.KvHeads, c.HeadDim);
            // Fill in chunks across all sequences, so each sequence's pages are interleaved with the others' in the pool.
            for (int filled = 0; filled < c.Context; filled += chunk)
            {
                cache.Append(sequences, keys, values, _stream);
            }
            _stream.Synchronize();
            long queryElements = (long)c.Batch * c.Heads * c.HeadDim;
            using var query = Random<Half>(queryElements, 13);
            using var output = DeviceBuffer<Half>.Allocate(_context, queryElements);
            using var q = DeviceTensor<Half>.WrapBshd(_context, query.DevicePointer, c.Batch, 1, c.Heads, c.HeadDim);
            using var o = DeviceTensor<Half>.WrapBshd(_context, output.DevicePointer, c.Batch, 1, c.Heads, c.HeadDim);
            foreach (DecodeKernel kernel in new[] { DecodeKernel.Tuned, DecodeKernel.Plain })
            {
                var decodeOptions = new GpuDecodeOptions { Kernel = kernel };
                _log.WriteLine($"[gpu] {c.Name} {kernel}");
                var m = Time(() => CudaDecode.Decode(q, cache, sequences, o, null, null, decodeOptions, _stream));
                rows.Add(Bandwidth(new ResultRow
                {
                    Section = "decode", Case = c.Name, Impl = kernel == DecodeKernel.Tuned ? "fastattention" : "fastattention-plain", Dtype = "fp16",
                    Batch = c.Batch, SeqQ = 1, SeqK = c.Context, Heads = c.Heads, KvHeads = c.KvHeads, HeadDim = c.HeadDim,
                    Causal = false, Params = $"paged, page {c.PageSize}, pages interleaved across sequences",
                }, m, c.Bytes));
            }
            // Append: `chunk` more tokens per sequence, rolled back (Trim, host only) before each timed call.
            _log.WriteLine($"[gpu] append B={c.Batch} n={chunk}");
            var append = Time(() => cache.Append(sequences, keys, values, _stream), () =>
            {
                foreach (int sq in sequences) cache.Trim(sq, c.Context);
            });
            double moved = 2.0 * 2 * chunkElements * 2;   // K and V, read + write, 2 bytes each
            rows.Add(Bandwidth(new ResultRow
            {
                Section = "append", Case = $"append fp16 D={c.HeadDim} Hkv={c.KvHeads} page={c.PageSize} B={c.Batch} n={chunk} after ctx={c.Context}",
                Impl = "fastattention", Dtype = "fp16", Batch = c.Batch, SeqQ = chunk, SeqK = c.Context, KvHeads = c.KvHeads, HeadDim = c.HeadDim,
                Params = "read the new K/V + write them into their pages, one launch",
            }, append, moved));
        }
        return rows;
    }

    /// <summary>
    /// The GPU multi-head attention module (fp16, d_model 2048, 16 heads of 128, B·S = 16384) against the sum of its
    /// parts timed alone: the fused QKV GEMM, the output GEMM (cuBLAS) and the attention forward.
    /// </summary>
    public IEnumerable<ResultRow> MultiHead()
    {
        var rows = new List<ResultRow>();
        foreach (int seq in _quick ? new[] { 4096 } : new[] { 1024, 4096 })
        {
            int batch = GpuCases.Tokens / seq, model = GpuCases.Hidden, heads = 16, headDim = 128;
            int tokens = batch * seq;
            var config = new AttentionConfig(modelDim: model, heads: heads, kvHeads: heads, headDim: headDim, causal: true, bias: false);
            using var module = new CudaMultiHeadAttention<Half>(config, _context, _stream);
            var rng = new Random(5);
            float[] W(int rowsOut, int cols) => [.. Enumerable.Range(0, rowsOut * cols).Select(_ => (float)(rng.NextDouble() - 0.5) * 0.04f)];
            module.SetWeights(W(model, model), W(model, model), W(model, model), W(model, model));
            using var x = Random<Half>((long)tokens * model, 21);
            using var y = DeviceBuffer<Half>.Allocate(_context, (long)tokens * model);
            using var xt = DeviceTensor<Half>.Wrap(_context, x.DevicePointer, [batch, seq, model], [(nint)seq * model, model, 1]);
            using var yt = DeviceTensor<Half>.Wrap(_context, y.DevicePointer, [batch, seq, model], [(nint)seq * model, model, 1]);
            string name = $"mha fp16 d={model} H={heads} D={headDim} S={seq} B={batch} causal";
            _log.WriteLine($"[gpu] {name}");
            var whole = Time(() => module.Forward(xt, yt));

            // The parts: QKV [tokens, model] x [model, 3 model]^T, O [tokens, model] x [model, model]^T, attention.
            using var blas = CudaBlas.Create(_context);
            blas.SetStream(_stream);
            using var wqkv = Random<Half>(3L * model * model, 22);
            using var qkv = DeviceBuffer<Half>.Allocate(_context, 3L * tokens * model);
            using var wo = Random<Half>((long)model * model, 23);
            var qkvGemm = Time(() => blas.Gemm(false, true, tokens, 3 * model, model, 1f, x, model, wqkv, model, 0f, qkv, 3 * model));
            var oGemm = Time(() => blas.Gemm(false, true, tokens, model, model, 1f, y, model, wo, model, 0f, x, model));
            using var attention = new CudaAttention(_context);
            nint[] lengths = [batch, seq, heads, headDim];
            nint[] qkvStrides = [(nint)seq * 3 * model, 3 * model, headDim, 1];
            using var q = DeviceTensor<Half>.Wrap(_context, qkv.DevicePointer, lengths, qkvStrides);
            using var k = DeviceTensor<Half>.Wrap(_context, qkv.DevicePointer + model * 2, lengths, qkvStrides);
            using var v = DeviceTensor<Half>.Wrap(_context, qkv.DevicePointer + 2 * model * 2, lengths, qkvStrides);
            using var o = DeviceTensor<Half>.WrapBshd(_context, y.DevicePointer, batch, seq, heads, headDim);
            var causal = new AttentionOptions { Mask = AttentionMask.CausalMask };
            var attend = Time(() => attention.Forward(q, k, v, o, causal, stream: _stream));

            double gemmFlops = 2.0 * tokens * model * (3 * model) + 2.0 * tokens * model * model;
            double attnFlops = new GpuForwardCase("fp16", batch, seq, heads, headDim, true).Flops;
            double partsMs = qkvGemm.MedianMs + oGemm.MedianMs + attend.MedianMs;
            var baseRow = new ResultRow
            {
                Section = "mha", Case = name, Impl = "fastattention", Dtype = "fp16", Batch = batch, SeqQ = seq, SeqK = seq, Heads = heads,
                KvHeads = heads, HeadDim = headDim, Causal = true,
            };
            // Speedup on the module row = (sum of the parts timed alone) / module time: 1 means no overhead between them.
            rows.Add(Throughput(baseRow with { Case = name + ": module", Params = "module forward", Speedup = partsMs / whole.MedianMs,
                Note = $"sum of parts alone {partsMs.ToString("F3", System.Globalization.CultureInfo.InvariantCulture)} ms" }, whole, gemmFlops + attnFlops));
            rows.Add(Throughput(baseRow with { Case = name + ": QKV GEMM", Impl = "cublas", Params = "fused QKV GEMM alone" }, qkvGemm, 2.0 * tokens * model * (3 * model)));
            rows.Add(Throughput(baseRow with { Case = name + ": output GEMM", Impl = "cublas", Params = "output GEMM alone" }, oGemm, 2.0 * tokens * model * model));
            rows.Add(Throughput(baseRow with { Case = name + ": attention", Params = "attention alone (strided Q/K/V views of the QKV output)" }, attend, attnFlops));
        }
        return rows;
    }

    // ---- helpers ------------------------------------------------------------------------------------------------

    // CUDA events around each call after warm-ups; prepare (host work, e.g. rolling a cache back) runs before each call, untimed.
    private Measurement Time(Action call, Action? prepare = null)
    {
        for (int i = 0; i < Warmups; i++)
        {
            prepare?.Invoke();
            call();
        }
        _stream.Synchronize();
        using var start = CudaEvent.Create(_context);
        using var end = CudaEvent.Create(_context);
        var times = new double[Reps];
        for (int i = 0; i < Reps; i++)
        {
            prepare?.Invoke();
            start.Record(_stream);
            call();
            end.Record(_stream);
            end.Synchronize();
            times[i] = CudaEvent.ElapsedMilliseconds(start, end);
        }
        Array.Sort(times);
        double median = times.Length % 2 == 1 ? times[times.Length / 2] : 0.5 * (times[times.Length / 2 - 1] + times[times.Length / 2]);
        return new Measurement(median, times[0], times[^1], times.Length);
    }

    private static ResultRow Row(string section, string name, string impl, string dtype, int b, int s, int h, int d, bool causal) => new()
    {
        Section = section, Case = name, Impl = impl, Dtype = dtype, Batch = b, SeqQ = s, SeqK = s, Heads = h, KvHeads = h, HeadDim = d, Causal = causal,
    };

    private static ResultRow Throughput(ResultRow row, Measurement m, double flops) =>
        row.WithTime(m) with { Flops = flops, Gflops = flops / (m.MedianMs * 1e-3) / 1e9 };

    private ResultRow Bandwidth(ResultRow row, Measurement m, double bytes)
    {
        double gbs = bytes / (m.MedianMs * 1e-3) / 1e9;
        return row.WithTime(m) with { Bytes = bytes, Gbs = gbs, PctReadPeak = _peakGbs is { } p ? gbs / p : null };
    }

    private static DeviceTensor<T> View<T>(DeviceBuffer<T> buffer, int b, int s, int h, int d) where T : unmanaged =>
        DeviceTensor<T>.WrapBshd(buffer.Context, buffer.DevicePointer, b, s, h, d);

    // Uniform values in [-1, 1) from a fixed seed, uploaded once per buffer.
    private DeviceBuffer<T> Random<T>(long count, ulong seed) where T : unmanaged
    {
        var values = new float[count];
        ulong state = 0x9E3779B97F4A7C15UL * (seed + 1);
        for (long i = 0; i < count; i++)
        {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            values[i] = (float)((state >> 40) * (1.0 / (1UL << 24)) * 2.0 - 1.0);
        }
        if (typeof(T) == typeof(float)) return (DeviceBuffer<T>)(object)DeviceBuffer<float>.FromSpan(_context, values);
        if (typeof(T) == typeof(Half))
        {
            var half = new Half[count];
            System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, half);
            return (DeviceBuffer<T>)(object)DeviceBuffer<Half>.FromSpan(_context, half);
        }
        var bf16 = new BFloat16[count];
        for (long i = 0; i < count; i++) bf16[i] = (BFloat16)values[i];
        return (DeviceBuffer<T>)(object)DeviceBuffer<BFloat16>.FromSpan(_context, bf16);
    }
}
