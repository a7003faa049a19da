#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention as a GPU peer of FastAttention.

Times torch.nn.functional.scaled_dot_product_attention on the shapes `compare` uses and writes a results JSON
(schema fastattention-bench/1, the same rows as the CLI's --json) that the CLI merges into its table:

    python3 perf/peers/torch_sdpa.py --out perf/results/torch_sdpa.json            # on the GPU host
    dotnet run -c Release --project perf/FastAttention.Bench -- compare --merge-json perf/results/torch_sdpa.json

Shapes (as `compare`): prefill B=1, H=Hkv=8, S=Sq=Sk, D 64 and 128, non-causal and causal; decode B=8, H=Hkv=8,
D=128, one query token against a context. --quick uses compare --quick's lengths. Timing: CUDA events around each
call after warm-ups; median, min and max over --reps calls. FLOPs are FlashAttention's count (4*B*H*Sq*Sk*D, halved
for causal). Needs PyTorch with CUDA (or --device cpu); nothing else.
"""
import argparse
import datetime
import json
import platform
import statistics
import sys

SCHEMA = "fastattention-bench/1"
FIELDS = [
    "section", "case", "impl", "device", "dtype", "batch", "seq_q", "seq_k", "heads", "kv_heads", "head_dim", "causal",
    "params", "density", "median_ms", "min_ms", "max_ms", "runs", "spread", "flops", "gflops", "pct_fma_peak", "bytes",
    "gbs", "pct_read_peak", "speedup", "alloc_bytes", "max_abs_diff", "note",
]


def case_name(decode, batch, seq_q, seq_k, heads, head_dim, causal):
    """The same case names as the CLI's CompareCase.Name, so rows line up."""
    if decode:
        return f"decode B={batch} H={heads} D={head_dim} ctx={seq_k}"
    return f"prefill B={batch} H={heads} D={head_dim} S={seq_q}{' causal' if causal else ''}"


def cases(quick, seqs, head_dims, contexts):
    out = []
    for d in head_dims or [64, 128]:
        lengths = seqs or ((([512, 1024, 2048] if d <= 64 else [1024, 2048])) if quick else [512, 1024, 2048, 4096, 8192])
        for s in lengths:
            for causal in (False, True):
                out.append(dict(decode=False, batch=1, seq_q=s, seq_k=s, heads=8, head_dim=d, causal=causal))
    for ctx in contexts or ([1024, 4096] if quick else [1024, 4096, 16384]):
        out.append(dict(decode=True, batch=8, seq_q=1, seq_k=ctx, heads=8, head_dim=128, causal=False))
    return out


def row(**values):
    r = {f: None for f in FIELDS}
    r.update(values)
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="torch_sdpa.json", help="results JSON to write (default: torch_sdpa.json)")
    p.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    p.add_argument("--dtype", default="fp16,bf16", help="comma-separated: fp16, bf16, fp32 (default: fp16,bf16)")
    p.add_argument("--quick", action="store_true", help="compare --quick's lengths")
    p.add_argument("--seq", default=None, help="comma-separated prefill lengths (replaces the defaults)")
    p.add_argument("--head-dim", default=None, help="comma-separated head dims (replaces 64,128)")
    p.add_argument("--contexts", default=None, help="comma-separated decode contexts (replaces the defaults)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per shape (default 3)")
    p.add_argument("--reps", type=int, default=20, help="timed calls per shape (default 20)")
    args = p.parse_args(argv)

    def ints(text):
        try:
            values = [int(x) for x in text.split(",") if x.strip()] if text else None
        except ValueError:
            p.error(f"not a comma-separated list of whole numbers: {text!r}")
        if values is not None and (not values or min(values) < 1):
            p.error(f"lengths must be whole numbers >= 1: {text!r}")
        return values

    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    for d in dtypes:
        if d not in ("fp16", "bf16", "fp32"):
            p.error(f"unknown dtype {d!r}; expected fp16, bf16 or fp32")
    if args.reps < 1 or args.warmup < 0:
        p.error("--reps must be >= 1 and --warmup >= 0")
    shapes = cases(args.quick, ints(args.seq), ints(args.head_dim), ints(args.contexts))

    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"error: PyTorch is not importable ({e}); install torch with CUDA on the GPU host.", file=sys.stderr)
        return 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: torch.cuda.is_available() is False; run on the GPU host or pass --device cpu.", file=sys.stderr)
        return 1
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        device_name = f"cuda:{index} {torch.cuda.get_device_name(index)}"
    else:
        device_name = "cpu"

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        times = []
        if device.type == "cuda":
            torch.cuda.synchronize()
            for _ in range(args.reps):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        else:
            import time
            for _ in range(args.reps):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times), min(times), max(times), len(times)

    rows = []
    gen = torch.Generator(device="cpu").manual_seed(2024)
    for dt in dtypes:
        for c in shapes:
            b, sq, sk, h, d, causal = c["batch"], c["seq_q"], c["seq_k"], c["heads"], c["head_dim"], c["causal"]
            name = case_name(c["decode"], b, sq, sk, h, d, causal)
            base = dict(section="compare", case=name, impl="torch-sdpa", device=device_name, dtype=dt, batch=b, seq_q=sq, seq_k=sk,
                        heads=h, kv_heads=h, head_dim=d, causal=causal)
            flops = 4.0 * b * h * sq * sk * d * (0.5 if causal else 1.0)
            elem = torch.finfo(torch_dtype[dt]).bits // 8
            kv_bytes = 2.0 * elem * b * sk * h * d
            try:
                # torch's layout [B, H, S, D]; uniform [-1, 1) like the CLI.
                q = (torch.rand(b, h, sq, d, generator=gen) * 2 - 1).to(device=device, dtype=torch_dtype[dt])
                k = (torch.rand(b, h, sk, d, generator=gen) * 2 - 1).to(device=device, dtype=torch_dtype[dt])
                v = (torch.rand(b, h, sk, d, generator=gen) * 2 - 1).to(device=device, dtype=torch_dtype[dt])
                with torch.inference_mode():
                    median, lo, hi, runs = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
            except RuntimeError as e:  # out of memory, unsupported dtype on this device, ...
                rows.append(row(**base, flops=flops, bytes=kv_bytes, note=f"not run: {e}".splitlines()[0]))
                print(f"[torch_sdpa] {name} {dt}: not run: {e}", file=sys.stderr)
                continue
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row(**base, params="F.scaled_dot_product_attention (backend chosen by torch)", median_ms=median,
                            min_ms=lo, max_ms=hi, runs=runs, spread=(hi - lo) / (2 * median) if median > 0 else 0.0,
                            flops=flops, gflops=flops / (median * 1e-3) / 1e9, bytes=kv_bytes,
                            gbs=kv_bytes / (median * 1e-3) / 1e9))
            print(f"[torch_sdpa] {name} {dt}: {median:.3f} ms, {flops / (median * 1e-3) / 1e12:.1f} TFLOP/s", file=sys.stderr)

    doc = {
        "schema": SCHEMA,
        "tool": f"perf/peers/torch_sdpa.py (torch {torch.__version__}, CUDA {torch.version.cuda})",
        "command": "python3 " + " ".join(["perf/peers/torch_sdpa.py"] + (argv if argv is not None else sys.argv[1:])),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "quick" if args.quick else "full",
        "threads": torch.get_num_threads(),
        "machine": {"cpu": platform.processor() or platform.machine(), "logical_cores": None, "os": platform.platform(),
                    "runtime": f"Python {platform.python_version()}", "avx2": None, "fma": None, "avx512f": None,
                    "vector512_accelerated": None, "optimized_build": None},
        "peak": None,
        "load": {"loadavg_start": None, "loadavg_end": None, "other_cpu_fraction": None, "wall_s": None},
        "messages": [],
        "rows": rows,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"[torch_sdpa] wrote {args.out} ({len(rows)} rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
