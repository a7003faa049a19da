#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention on the FlashAttention-2 backend: the GPU peer of `FastAttention.Bench gpu`.

Times torch.nn.functional.scaled_dot_product_attention forced to SDPBackend.FLASH_ATTENTION on the shapes of the
`gpu` command's forward section and writes JSON rows with the same case names, so perf/gpu/summarize.py can join
them into ratios:

    python3 perf/peers/torch_gpu_attention.py --out peer-attention.json [--quick]

Shapes: fp16 and bf16 (--quick: fp16), head dim 64 and 128, causal and not, seq 512..16k with batch*seq = 16384 and
hidden 2048 (32 heads of 64 / 16 heads of 128); plus the dense baseline of the block-sparse case (seq 8192, D 128).
Timing: CUDA events around each call after warm-ups, median (and min/max) of --reps calls. FLOPs: FlashAttention's
count 4*B*H*S^2*D, halved for causal. Needs PyTorch with CUDA; nothing else.
"""
import argparse
import sys

from gpu_peer_common import describe_device, import_torch_cuda, new_doc, time_cuda, write

FIELDS = [
    "section", "case", "impl", "device", "dtype", "batch", "seq_q", "seq_k", "heads", "kv_heads", "head_dim", "causal",
    "params", "density", "median_ms", "min_ms", "max_ms", "runs", "spread", "flops", "gflops", "pct_fma_peak", "bytes",
    "gbs", "pct_read_peak", "speedup", "alloc_bytes", "max_abs_diff", "note",
]
TOKENS = 16384
HIDDEN = 2048
IMPL = "torch-sdpa-fa2"


def forward_seqs(quick):
    """The same lengths as GpuCases.ForwardSeqs."""
    return [1024, 4096, 16384] if quick else [512, 1024, 2048, 4096, 8192, 16384]


def dtypes(quick):
    return ["fp16"] if quick else ["fp16", "bf16"]


def case_name(dtype, head_dim, seq, batch, heads, causal):
    """The same names as GpuForwardCase.Name."""
    return f"fwd {dtype} D={head_dim} S={seq} B={batch} H={heads}{' causal' if causal else ''}"


def forward_cases(quick):
    out = []
    for dtype in dtypes(quick):
        for d in (64, 128):
            for s in forward_seqs(quick):
                for causal in (False, True):
                    out.append(dict(section="forward", dtype=dtype, batch=TOKENS // s, seq=s, heads=HIDDEN // d, head_dim=d, causal=causal))
        # The block-sparse case's dense baseline (GpuSparseCase.Dense): S 8192, D 128, non-causal.
        out.append(dict(section="sparse", dtype=dtype, batch=TOKENS // 8192, seq=8192, heads=HIDDEN // 128, head_dim=128, causal=False))
    return out


def flops(c):
    return 4.0 * c["batch"] * c["heads"] * c["seq"] * c["seq"] * c["head_dim"] * (0.5 if c["causal"] else 1.0)


def row(**values):
    r = {f: None for f in FIELDS}
    r.update(values)
    return r


def flash_only(torch):
    """A context manager that allows only the FlashAttention-2 SDPA backend (new and old PyTorch APIs)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    except ImportError:
        return torch.backends.cuda.sdp_kernel(enable_flash=True, enable_math=False, enable_mem_efficient=False)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="peer-attention.json", help="results JSON to write (default: peer-attention.json)")
    p.add_argument("--quick", action="store_true", help="fp16 only, three sequence lengths, 5 timed calls")
    p.add_argument("--reps", type=int, default=None, help="timed calls per case (default 10, --quick 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    p.add_argument("--list", action="store_true", help="print the case names and exit (no GPU needed)")
    a = p.parse_args(argv)
    if a.list:
        for c in forward_cases(a.quick):
            print(c["section"], case_name(c["dtype"], c["head_dim"], c["seq"], c["batch"], c["heads"], c["causal"]))
        return 0
    reps = a.reps or (5 if a.quick else 10)
    doc = new_doc("perf/peers/torch_gpu_attention.py", a.quick)
    imported = import_torch_cuda(doc, a.out)
    if imported is None:
        return 1
    torch, F = imported
    device_label = describe_device(torch, doc)
    types = {"fp16": torch.float16, "bf16": torch.bfloat16}
    for c in forward_cases(a.quick):
        name = case_name(c["dtype"], c["head_dim"], c["seq"], c["batch"], c["heads"], c["causal"])
        base = dict(section=c["section"], case=name, impl=IMPL, device=device_label, dtype=c["dtype"], batch=c["batch"],
                    seq_q=c["seq"], seq_k=c["seq"], heads=c["heads"], kv_heads=c["heads"], head_dim=c["head_dim"],
                    causal=c["causal"], params="SDPBackend.FLASH_ATTENTION", flops=flops(c))
        try:
            shape = (c["batch"], c["heads"], c["seq"], c["head_dim"])  # SDPA's [B, H, S, D]
            q, k, v = (torch.randn(shape, device="cuda", dtype=types[c["dtype"]]) for _ in range(3))
            with flash_only(torch):
                med, lo, hi, n = time_cuda(torch, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=c["causal"]), a.warmup, reps)
            r = row(**base, median_ms=med, min_ms=lo, max_ms=hi, runs=n, spread=(hi - lo) / (2 * med),
                    gflops=flops(c) / (med * 1e-3) / 1e9)
            del q, k, v
        except Exception as e:  # e.g. the flash backend refuses a shape: record it, go on
            r = row(**base, note=f"failed: {type(e).__name__}: {e}".splitlines()[0])
            doc["errors"].append(f"{name}: {r['note']}")
        doc["rows"].append(r)
        print(f"{name:48s} {IMPL}  " + (f"{r['median_ms']:.3f} ms  {r['gflops'] / 1000:.1f} TFLOP/s" if r["median_ms"] else r["note"]), flush=True)
    write(a.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
