// Host-side planning of the GPU multi-head attention module: activation layouts, the projection GEMMs (operands,
// offsets, leading dimensions), the strided Q/K/V views into the projection workspace, workspace sizes and the
// bias-broadcast launch. Pure C#, so every index the module hands to cuBLAS and the kernels is tested on the CPU.
namespace FastAttention.Gpu;

/// <summary>The memory a planned GEMM or view refers to.</summary>
internal enum PlanOperand
{
    /// <summary>The call's input activations <c>[B, Sq, modelDim]</c>.</summary>
    Input,
    /// <summary>The call's context activations <c>[B, Sk, modelDim]</c> (cross-attention).</summary>
    Context,
    /// <summary>Workspace: projected Q, K, V.</summary>
    Projected,
    /// <summary>Workspace: the attention output <c>[B, Sq, H, D]</c>, contiguous.</summary>
    Attended,
    /// <summary>The call's output <c>[B, Sq, modelDim]</c>.</summary>
    Output,
    /// <summary>Fused weights Wqkv <c>[H·D + 2·Hkv·D, modelDim]</c> (rows: Q heads, K heads, V heads).</summary>
    FusedWeight,
    /// <summary>Output weights Wo <c>[modelDim, H·D]</c>.</summary>
    OutputWeight,
}

/// <summary>
/// An activation tensor <c>[B, S, F]</c> as row-major matrices: row <c>s</c> of batch entry <c>b</c> starts at
/// <c>b·BatchStride + s·RowStride</c>. When <see cref="Uniform"/>, that is <c>r·RowStride</c> for <c>r = b·S + s</c> and one
/// GEMM covers all B·S rows; otherwise (e.g. a window of a longer sequence, or a sequence-major <c>[S, B, F]</c> buffer
/// viewed as <c>[B, S, F]</c>) a strided-batched GEMM runs one <c>[S, F]</c> matrix per batch entry.
/// </summary>
internal readonly record struct ActivationLayout(int Batch, int Seq, int RowStride, long BatchStride)
{
    /// <summary>B·S.</summary>
    public int Rows => Batch * Seq;

    /// <summary>True when the B·S rows are equally spaced (<c>BatchStride = S·RowStride</c>).</summary>
    public bool Uniform => BatchStride == (long)Seq * RowStride;

    /// <summary>
    /// Checks that a tensor is <c>[B &gt;= 1, S &gt;= 1, <paramref name="features"/>]</c> with unit feature stride and rows
    /// that do not overlap: either batch-major (<c>stride0 &gt;= (S-1)·stride1 + F</c>) or sequence-major
    /// (<c>stride1 &gt;= (B-1)·stride0 + F</c>), with <c>stride1 &gt;= F</c>. Length-1 dimensions' strides are ignored.
    /// </summary>
    /// <exception cref="ArgumentException">The rank, a length or a stride does not fit (message names the tensor and the numbers).</exception>
    public static ActivationLayout Of(ReadOnlySpan<nint> lengths, ReadOnlySpan<nint> strides, int features, string name)
    {
        if (lengths.Length != 3 || strides.Length != 3 || lengths[0] < 1 || lengths[1] < 1 || lengths[2] != features)
        {
            throw new ArgumentException($"{name} must be [B >= 1, S >= 1, {features}], got [{string.Join(", ", lengths.ToArray())}].", name);
        }
        if (lengths[0] > int.MaxValue || lengths[1] > int.MaxValue || (long)lengths[0] * lengths[1] > int.MaxValue)
        {
            throw new ArgumentException($"{name} has B·S = {lengths[0]}·{lengths[1]} rows; at most {int.MaxValue} are supported.", name);
        }
        int batch = (int)lengths[0], seq = (int)lengths[1];
        if (features > 1 && strides[2] != 1)
        {
            throw new ArgumentException($"{name} must have unit stride in its last dimension, got strides [{string.Join(", ", strides.ToArray())}].", name);
        }
        // Normalise the strides of length-1 dimensions away: S = 1 makes the batch entries the rows; B = 1 leaves one matrix.
        long rowStride = seq > 1 ? strides[1] : batch > 1 ? strides[0] : features;
        long batchStride = batch > 1 && seq > 1 ? strides[0] : (long)seq * rowStride;
        if (rowStride < features || rowStride > int.MaxValue)
        {
            throw new ArgumentException($"{name} has a row stride of {rowStride}; it must be in [{features}, {int.MaxValue}] (rows may not overlap).", name);
        }
        bool batchMajor = batchStride >= (long)(seq - 1) * rowStride + features;
        bool sequenceMajor = batchStride >= features && rowStride >= (long)(batch - 1) * batchStride + features;
        if (!batchMajor && !sequenceMajor)
        {
            throw new ArgumentException(
                $"{name} rows overlap: strides [{string.Join(", ", strides.ToArray())}] for lengths [{batch}, {seq}, {features}] need stride[0] >= (S-1)·stride[1] + F = {(long)(seq - 1) * rowStride + features} " +
                $"or stride[1] >= (B-1)·stride[0] + F = {(long)(batch - 1) * batchStride + features}.", name);
        }
        return new ActivationLayout(batch, seq, (int)rowStride, batchStride);
    }
}

/// <summary>
/// One projection: row-major <c>C[M, N] = A[M, K] · W[N, K]ᵀ (+ bias)</c> for each of <see cref="Batches"/> matrix pairs
/// (A at <c>AOffset + i·StrideA</c>, C at <c>COffset + i·StrideC</c>), W read from row <see cref="WeightRow"/> of its
/// contiguous matrix (leading dimension K) and shared by all. With a bias, the bias entries
/// <c>[WeightRow, WeightRow + N)</c> are first broadcast into every row of C and the GEMM runs with beta = 1.
/// </summary>
internal readonly record struct ProjectionStep(
    PlanOperand A, long AOffset, int Lda,
    PlanOperand Weight, int WeightRow,
    PlanOperand C, long COffset, int Ldc,
    int M, int N, int K, int Batches = 1, long StrideA = 0, long StrideC = 0);

/// <summary>A strided <c>[B, S, heads, D]</c> view into the projection workspace.</summary>
internal readonly record struct HeadView(long Offset, int Batch, int Seq, int Heads, int HeadDim, long BatchStride, int RowStride)
{
    /// <summary>The view's lengths.</summary>
    public nint[] Lengths => [Batch, Seq, Heads, HeadDim];

    /// <summary>The view's element strides.</summary>
    public nint[] Strides => [(nint)BatchStride, RowStride, HeadDim, 1];

    /// <summary>Elements from <see cref="Offset"/> to one past the last element of the view.</summary>
    public long Extent => (long)(Batch - 1) * BatchStride + (long)(Seq - 1) * RowStride + (long)(Heads - 1) * HeadDim + HeadDim;
}

/// <summary>Everything the module queues for one call, computed from the config and the activation shapes.</summary>
/// <param name="Batch">B.</param>
/// <param name="SeqQ">Sq.</param>
/// <param name="SeqK">Sk (self-attention and decode: Sq).</param>
/// <param name="Cross">Keys and values come from a separate context.</param>
/// <param name="Projections">The Q/K/V projection GEMMs (one fused GEMM for self-attention and decode, two for cross-attention).</param>
/// <param name="Query">Q, <c>[B, Sq, H, D]</c>, in the projection workspace.</param>
/// <param name="Key">K, <c>[B, Sk, Hkv, D]</c>, in the projection workspace (decode: the new tokens' keys).</param>
/// <param name="Value">V, like <paramref name="Key"/>.</param>
/// <param name="OutputProjection">output = attended · Woᵀ + bo.</param>
/// <param name="ProjectedElements">Elements the projection workspace needs.</param>
/// <param name="AttendedElements">Elements the attention-output workspace needs.</param>
internal sealed record MultiHeadPlan(
    int Batch, int SeqQ, int SeqK, bool Cross,
    ProjectionStep[] Projections, HeadView Query, HeadView Key, HeadView Value, ProjectionStep OutputProjection,
    long ProjectedElements, long AttendedElements)
{
    /// <summary>
    /// The plan of a full forward: self-attention (<paramref name="context"/> null) projects x once through the fused
    /// Wqkv into <c>[B·S, H·D + 2·Hkv·D]</c> and reads Q, K, V in place; cross-attention projects Q from x into
    /// <c>[B·Sq, H·D]</c> and K, V from the context through the K and V rows of Wqkv into <c>[B·Sk, 2·Hkv·D]</c>
    /// right after it. The attention writes a contiguous <c>[B, Sq, H, D]</c>, which the output GEMM reads.
    /// An incremental step over a KV cache uses the self-attention plan of its <c>n</c> new tokens: <see cref="Key"/> and
    /// <see cref="Value"/> are then the keys and values to append, <see cref="Query"/> the queries of the decode.
    /// </summary>
    /// <exception cref="ArgumentException">The batches of input and context differ, or a workspace would exceed int32 rows.</exception>
    public static MultiHeadPlan Forward(AttentionConfig config, ActivationLayout input, ActivationLayout? context, ActivationLayout output)
    {
        ArgumentNullException.ThrowIfNull(config);
        int model = config.ModelDim, d = config.HeadDim;
        int qw = config.Heads * d, kw = config.KvHeads * d, fused = qw + 2 * kw;
        int batch = input.Batch, sq = input.Seq;
        RequireOutput(input, output);
        if (context is not { } ctx)
        {
            long rows = (long)batch * sq;
            var qkv = IntoWorkspace(PlanOperand.Input, input, 0, 0, fused, model);
            return new MultiHeadPlan(batch, sq, sq, false, [qkv],
                new HeadView(0, batch, sq, config.Heads, d, (long)sq * fused, fused),
                new HeadView(qw, batch, sq, config.KvHeads, d, (long)sq * fused, fused),
                new HeadView(qw + kw, batch, sq, config.KvHeads, d, (long)sq * fused, fused),
                OutputStep(config, input, output), rows * fused, rows * qw);
        }
        if (ctx.Batch != batch)
        {
            throw new ArgumentException($"context batch {ctx.Batch} must equal input batch {batch}.", "context");
        }
        int sk = ctx.Seq;
        long qSize = (long)batch * sq * qw;
        var q = IntoWorkspace(PlanOperand.Input, input, 0, 0, qw, model);
        var kv = IntoWorkspace(PlanOperand.Context, ctx, qw, qSize, 2 * kw, model);
        return new MultiHeadPlan(batch, sq, sk, true, [q, kv],
            new HeadView(0, batch, sq, config.Heads, d, (long)sq * qw, qw),
            new HeadView(qSize, batch, sk, config.KvHeads, d, (long)sk * 2 * kw, 2 * kw),
            new HeadView(qSize + kw, batch, sk, config.KvHeads, d, (long)sk * 2 * kw, 2 * kw),
            OutputStep(config, input, output), qSize + (long)batch * sk * 2 * kw, qSize);
    }

    /// <summary>The launch of <c>fa_bias_rows</c> for <paramref name="rows"/> rows (all batches) of <paramref name="cols"/> columns: 256 threads over columns, one block row per matrix row up to 65535 (grid-stride beyond).</summary>
    public static (uint GridX, uint GridY, uint Block) BiasLaunch(long rows, int cols)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(cols);
        const int block = 256;
        return ((uint)((cols + block - 1) / block), (uint)Math.Min(rows, 65535L), block);
    }

    private static void RequireOutput(ActivationLayout input, ActivationLayout output)
    {
        if (output.Batch != input.Batch || output.Seq != input.Seq)
        {
            throw new ArgumentException($"output is [{output.Batch}, {output.Seq}, ...]; the input needs [{input.Batch}, {input.Seq}, ...].", "output");
        }
    }

    /// <summary>Activation rows times weight rows <c>[weightRow, weightRow + n)</c> into a contiguous workspace <c>[B·S, n]</c> at <paramref name="offset"/>.</summary>
    private static ProjectionStep IntoWorkspace(PlanOperand source, ActivationLayout a, int weightRow, long offset, int n, int k) =>
        a.Uniform
            ? new ProjectionStep(source, 0, a.RowStride, PlanOperand.FusedWeight, weightRow, PlanOperand.Projected, offset, n, a.Rows, n, k)
            : new ProjectionStep(source, 0, a.RowStride, PlanOperand.FusedWeight, weightRow, PlanOperand.Projected, offset, n, a.Seq, n, k,
                a.Batch, a.BatchStride, (long)a.Seq * n);

    /// <summary>The contiguous attention output <c>[B·Sq, H·D]</c> times Woᵀ into the output rows.</summary>
    private static ProjectionStep OutputStep(AttentionConfig config, ActivationLayout input, ActivationLayout output)
    {
        int qw = config.Heads * config.HeadDim;
        return output.Uniform
            ? new ProjectionStep(PlanOperand.Attended, 0, qw, PlanOperand.OutputWeight, 0, PlanOperand.Output, 0, output.RowStride, input.Rows, config.ModelDim, qw)
            : new ProjectionStep(PlanOperand.Attended, 0, qw, PlanOperand.OutputWeight, 0, PlanOperand.Output, 0, output.RowStride, output.Seq, config.ModelDim, qw,
                output.Batch, (long)output.Seq * qw, output.BatchStride);
    }
}
