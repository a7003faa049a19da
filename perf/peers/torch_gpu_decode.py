#!/usr/bin/env python3
"""Decode peers of FastAttention's paged decode on the issue-6 shapes: the GPU peer of `FastAttention.Bench gpu`.

    python3 perf/peers/torch_gpu_decode.py --out peer-decode.json [--quick]

Shapes: fp16, head dim 128, 32 query heads on 8 KV heads (GQA), 16-token pages, one query token per sequence,
(batch, context) = (1, 64k), (64, 1k), (64, 4k), (256, 2k) (--quick: the first two). The paged cache holds every
sequence's pages in a shuffled order (block table [B, ctx/16], int32). Implementations:

  torch-sdpa-contiguous   SDPA over a K/V cache already gathered into contiguous [B, Hkv, ctx, D] (SDPA alone)
  torch-sdpa-gather       gather of the pages through the block table + SDPA (what a paged cache costs PyTorch)
  flash-attn-kvcache      flash_attn.flash_attn_with_kvcache(block_table=...), if importable and it accepts the
                          page size (FlashAttention-2 wants pages that are multiples of 256 tokens)
  vllm-paged-v2           vllm._custom_ops.paged_attention_v2, if importable

Unavailable ones get a row with note "not available: <why>". GQA in SDPA uses enable_gqa=True where PyTorch has it
(2.5+), else K/V are repeated to 32 heads (noted: that reads 4x the bytes). Bandwidth = bytes of K and V read once
(2 * B * ctx * Hkv * D * 2) / median time. CUDA-event timing after warm-ups, median of --reps calls.
"""
import argparse
import sys

from gpu_peer_common import describe_device, import_torch_cuda, new_doc, time_cuda, write

FIELDS = [
    "section", "case", "impl", "device", "dtype", "batch", "seq_q", "seq_k", "heads", "kv_heads", "head_dim", "causal",
    "params", "density", "median_ms", "min_ms", "max_ms", "runs", "spread", "flops", "gflops", "pct_fma_peak", "bytes",
    "gbs", "pct_read_peak", "speedup", "alloc_bytes", "max_abs_diff", "note",
]
HEADS, KV_HEADS, HEAD_DIM, PAGE = 32, 8, 128, 16


def shapes(quick):
    """The same (batch, context) list as GpuCases.Decode."""
    full = [(1, 65536), (64, 1024), (64, 4096), (256, 2048)]
    return full[:2] if quick else full


def case_name(batch, ctx):
    """The same names as GpuDecodeCase.Name."""
    return f"decode fp16 D={HEAD_DIM} H={HEADS} Hkv={KV_HEADS} page={PAGE} B={batch} ctx={ctx}"


def kv_bytes(batch, ctx):
    return 2.0 * batch * ctx * KV_HEADS * HEAD_DIM * 2


def row(**values):
    r = {f: None for f in FIELDS}
    r.update(values)
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="peer-decode.json", help="results JSON to write (default: peer-decode.json)")
    p.add_argument("--quick", action="store_true", help="the first two shapes, 5 timed calls")
    p.add_argument("--reps", type=int, default=None, help="timed calls per case (default 10, --quick 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    p.add_argument("--list", action="store_true", help="print the case names and exit (no GPU needed)")
    a = p.parse_args(argv)
    if a.list:
        for b, ctx in shapes(a.quick):
            print("decode", case_name(b, ctx))
        return 0
    reps = a.reps or (5 if a.quick else 10)
    doc = new_doc("perf/peers/torch_gpu_decode.py", a.quick)
    imported = import_torch_cuda(doc, a.out)
    if imported is None:
        return 1
    torch, F = imported
    label = describe_device(torch, doc)
    gqa_native = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")

    def emit(impl, b, ctx, fn=None, note=None, params=None):
        base = dict(section="decode", case=case_name(b, ctx), impl=impl, device=label, dtype="fp16", batch=b, seq_q=1,
                    seq_k=ctx, heads=HEADS, kv_heads=KV_HEADS, head_dim=HEAD_DIM, causal=False, params=params, bytes=kv_bytes(b, ctx))
        if fn is None:
            r = row(**base, note=note)
        else:
            try:
                med, lo, hi, n = time_cuda(torch, fn, a.warmup, reps)
                gbs = kv_bytes(b, ctx) / (med * 1e-3) / 1e9
                r = row(**base, median_ms=med, min_ms=lo, max_ms=hi, runs=n, spread=(hi - lo) / (2 * med), gbs=gbs, note=note)
            except Exception as e:
                r = row(**base, note=f"not available: {type(e).__name__}: {e}".splitlines()[0])
        doc["rows"].append(r)
        print(f"{r['case']:56s} {impl:22s} " + (f"{r['median_ms']:.3f} ms  {r['gbs']:.0f} GB/s" if r["median_ms"] else r["note"]), flush=True)

    for b, ctx in shapes(a.quick):
        pages_per_seq = ctx // PAGE
        num_pages = b * pages_per_seq
        gen = torch.Generator(device="cuda").manual_seed(b * 100003 + ctx)
        # flash_attn's paged layout: [num_pages, page, Hkv, D]; the block table a shuffled permutation of the pages.
        k_cache = torch.randn((num_pages, PAGE, KV_HEADS, HEAD_DIM), device="cuda", dtype=torch.float16, generator=gen)
        v_cache = torch.randn((num_pages, PAGE, KV_HEADS, HEAD_DIM), device="cuda", dtype=torch.float16, generator=gen)
        block_table = torch.randperm(num_pages, device="cuda", generator=gen).to(torch.int32).reshape(b, pages_per_seq)
        q = torch.randn((b, HEADS, 1, HEAD_DIM), device="cuda", dtype=torch.float16, generator=gen)

        def gather():
            idx = block_table.long()
            k = k_cache[idx].reshape(b, ctx, KV_HEADS, HEAD_DIM).transpose(1, 2)
            v = v_cache[idx].reshape(b, ctx, KV_HEADS, HEAD_DIM).transpose(1, 2)
            return k, v

        def sdpa(k, v):
            if gqa_native:
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            rep = HEADS // KV_HEADS
            return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1))

        gqa_note = None if gqa_native else "no enable_gqa in this PyTorch: K/V repeated to 32 heads (4x the reads)"
        kc, vc = (t.contiguous() for t in gather())
        emit("torch-sdpa-contiguous", b, ctx, lambda: sdpa(kc, vc), gqa_note, "K/V [B, Hkv, ctx, D] contiguous")
        del kc, vc
        emit("torch-sdpa-gather", b, ctx, lambda: sdpa(*gather()), gqa_note, "gather through the block table + SDPA")

        try:
            from flash_attn import flash_attn_with_kvcache
            q_fa = q.transpose(1, 2).contiguous()  # [B, 1, H, D]
            seqlens = torch.full((b,), ctx, device="cuda", dtype=torch.int32)
            emit("flash-attn-kvcache", b, ctx, lambda: flash_attn_with_kvcache(q_fa, k_cache, v_cache, cache_seqlens=seqlens,
                                                                                block_table=block_table), None, "paged, page 16")
        except Exception as e:  # not installed, or it refuses the layout
            emit("flash-attn-kvcache", b, ctx, note=f"not available: {type(e).__name__}: {e}".splitlines()[0])

        try:
            from vllm import _custom_ops as ops
            x = 16 // 2  # elements per 16 bytes
            # vLLM's layouts: K [pages, Hkv, D/x, page, x], V [pages, Hkv, D, page].
            k_v = k_cache.view(num_pages, PAGE, KV_HEADS, HEAD_DIM // x, x).permute(0, 2, 3, 1, 4).contiguous()
            v_v = v_cache.permute(0, 2, 3, 1).contiguous()
            q_v = q.reshape(b, HEADS, HEAD_DIM).contiguous()
            out = torch.empty_like(q_v)
            partition = 512
            parts = (ctx + partition - 1) // partition
            exp_sums = torch.empty((b, HEADS, parts), device="cuda", dtype=torch.float32)
            max_logits = torch.empty_like(exp_sums)
            tmp = torch.empty((b, HEADS, parts, HEAD_DIM), device="cuda", dtype=torch.float16)
            seq_lens = torch.full((b,), ctx, device="cuda", dtype=torch.int32)
            one = torch.tensor(1.0, device="cuda", dtype=torch.float32)
            scale = HEAD_DIM ** -0.5
            emit("vllm-paged-v2", b, ctx, lambda: ops.paged_attention_v2(out, exp_sums, max_logits, tmp, q_v, k_v, v_v, KV_HEADS, scale,
                                                                          block_table, seq_lens, PAGE, ctx, None, "auto", one, one),
                 None, "vllm _custom_ops.paged_attention_v2")
        except Exception as e:
            emit("vllm-paged-v2", b, ctx, note=f"not available: {type(e).__name__}: {e}".splitlines()[0])
        del k_cache, v_cache, block_table, q
        torch.cuda.empty_cache()
    write(a.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
