#!/usr/bin/env python3
"""Joins the GPU suite's logs into summary.md (and the peers' JSON files into one peer.json).

    python3 perf/gpu/summarize.py --bench bench.json --peer peer-attention.json --peer peer-decode.json \\
        --peer-out peer.json --env env.txt --tests-log tests.log --stages stages.tsv --sanitizer-log sanitizer.log \\
        --out summary.md

Every input is optional (a missing or unreadable file is reported in the summary, never fatal), so a partial run
still gives a summary. Sections: the GPU, driver, CUDA and NVRTC versions; each stage's result and time; test
counts and failed tests; registers/spills/shared memory per kernel (the bench's report for the device, else the
warm stage's lines for the device); FastAttention vs the peers as ratios (peer time / FastAttention time, above 1:
FastAttention is faster), joined by case name; block-sparse vs dense; softmax and copy bandwidth; sanitizer results.
"""
import argparse
import json
import os
import re
import sys

KERNEL_LINE = re.compile(r"^(?P<name>fa_\w+) (?P<arch>sm_\d+): (?P<regs>\d+) registers, (?P<smem>\d+) B smem, "
                         r"(?P<stack>\d+) B stack, (?P<st>\d+)/(?P<ld>\d+) B spill")
SUMMARY_COUNT = re.compile(r"^\s*(total|failed|succeeded|skipped):\s*(\d+)")


def load_json(path, problems):
    if not path:
        return None
    if not os.path.exists(path):
        problems.append(f"{os.path.basename(path)}: not written")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"{os.path.basename(path)}: unreadable ({e})")
        return None


def read_text(path):
    if not path or not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def fmt(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def ratio(peer_ms, ours_ms):
    """Peer time / FastAttention time: above 1, FastAttention is faster."""
    if not peer_ms or not ours_ms:
        return None
    return peer_ms / ours_ms


def join_rows(bench_rows, peer_rows):
    """Pairs FastAttention's rows with the peers' rows of the same (section, case).

    Returns a list of dicts: section, case, ours (tuned row or None), plain (row or None), peers ({impl: row}).
    Cases are listed in FastAttention's order, then peer-only cases in the peers' order.
    """
    order, by_key = [], {}

    def entry(section, case):
        key = (section, case)
        if key not in by_key:
            by_key[key] = {"section": section, "case": case, "ours": None, "plain": None, "peers": {}}
            order.append(key)
        return by_key[key]

    for r in bench_rows:
        e = entry(r.get("section"), r.get("case"))
        if r.get("impl") == "fastattention":
            e["ours"] = r
        elif r.get("impl") == "fastattention-plain":
            e["plain"] = r
    for r in peer_rows:
        entry(r.get("section"), r.get("case"))["peers"][r.get("impl")] = r
    return [by_key[k] for k in order]


def parse_env(text):
    info = {}
    m = re.search(r"Driver Version:\s*([\d.]+)", text)
    if m:
        info["driver"] = m.group(1)
    m = re.search(r"CUDA Version:\s*([\d.]+)", text)
    if m:
        info["cuda"] = m.group(1)
    m = re.search(r"^python (\S+) torch (\S+) cuda (\S+) available (\S+)", text, re.M)
    if m:
        info["torch"] = f"PyTorch {m.group(2)} (CUDA {m.group(3)}, available: {m.group(4)})"
    m = re.search(r"release ([\d.]+), V([\d.]+)", text)
    if m:
        info["nvcc"] = m.group(2)
    return info


def parse_tests(text):
    """Each MTP run summary in the log (in order) and the names of failed tests."""
    runs, current = [], None
    for line in text.splitlines():
        if "Test run summary" in line:
            current = {"verdict": line.split("Test run summary:")[-1].strip().split(" - ")[0]}
            runs.append(current)
            continue
        m = SUMMARY_COUNT.match(line)
        if current is not None and m:
            current[m.group(1)] = int(m.group(2))
    failed = [l.split("failed ", 1)[1].strip() for l in text.splitlines() if l.startswith("failed ")]
    return runs, failed


def kernel_table(bench, tests_text):
    rows = []
    if bench and bench.get("kernels"):
        for k in bench["kernels"]:
            rows.append((k["name"], k["arch"], k["registers"], k["spill_bytes"], k["stack_bytes"], k["smem_bytes"]))
        return "device (bench)", rows
    seen = set()
    for line in tests_text.splitlines():
        m = KERNEL_LINE.match(line.strip())
        if m and (m["name"], m["arch"]) not in seen:
            seen.add((m["name"], m["arch"]))
            rows.append((m["name"], m["arch"], int(m["regs"]), int(m["st"]) + int(m["ld"]), int(m["stack"]), int(m["smem"])))
    return "warm stage (NVRTC, the device's architecture)", rows


def summarize(a):
    problems = []
    bench = load_json(a.bench, problems)
    peers = [d for d in (load_json(p, problems) for p in a.peer or []) if d]
    peer_rows = [r for d in peers for r in d.get("rows", [])]
    bench_rows = bench.get("rows", []) if bench else []
    env_text = read_text(a.env)
    env = parse_env(env_text)
    tests_text = read_text(a.tests_log)
    out = ["# FastAttention GPU suite", ""]

    device = (bench or {}).get("device") or {}
    gpu = device.get("name") or next((d["device"]["name"] for d in peers if d.get("device")), None)
    out.append(f"- GPU: {gpu or 'no GPU'}" + (f" ({device.get('sm')}, {device.get('multiprocessors')} SMs)" if device else ""))
    if bench and bench.get("no_device"):
        out.append(f"- no CUDA device: {bench['no_device']}")
    out.append(f"- driver: {env.get('driver', '–')}, CUDA (driver API): {env.get('cuda', '–')}"
               + (f", driver version from the bench: {bench.get('driver_version')}" if bench and bench.get("driver_version") else ""))
    out.append(f"- NVRTC: {(bench or {}).get('nvrtc') or '–'}; nvcc: {env.get('nvcc', '–')}")
    out.append(f"- PyTorch: {env.get('torch', '–')}")
    if device.get("peak_hbm_gbs"):
        out.append(f"- peak HBM: {device['peak_hbm_gbs']:.0f} GB/s ({device.get('peak_hbm_source')})")
    out.append(f"- mode: {(bench or {}).get('mode', '–')}, date: {(bench or {}).get('date_utc', '–')}")
    out.append("")

    stages = [l.split("\t") for l in read_text(a.stages).splitlines() if l.count("\t") >= 2]
    if stages:
        out += ["## Stages", "", "| stage | result | seconds |", "|---|---|---:|"]
        out += [f"| {s[0]} | {s[1]} | {s[2]} |" for s in stages]
        out.append("")

    runs, failed = parse_tests(tests_text)
    if runs:
        out += ["## Tests", "", "| run | verdict | total | succeeded | failed | skipped |", "|---|---|---:|---:|---:|---:|"]
        for i, r in enumerate(runs, 1):
            out.append(f"| {i} | {r.get('verdict', '')} | {r.get('total', '–')} | {r.get('succeeded', '–')} | {r.get('failed', '–')} | {r.get('skipped', '–')} |")
        out.append("")
        if failed:
            out += ["Failed tests:", ""] + [f"- {f}" for f in failed[:50]] + [""]

    source, kernels = kernel_table(bench, tests_text)
    if kernels:
        out += [f"## Kernels ({source})", "", "| kernel | arch | registers | spill bytes | stack bytes | smem bytes |", "|---|---|---:|---:|---:|---:|"]
        out += [f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {k[5]} |" for k in kernels]
        out.append("")

    joined = join_rows(bench_rows, peer_rows)
    fwd = [e for e in joined if e["section"] == "forward"]
    if fwd:
        out += ["## Forward vs PyTorch SDPA (FlashAttention-2 backend)", "",
                "Ratio = PyTorch time / FastAttention time (above 1: FastAttention is faster).", "",
                "| case | FA tuned ms | TFLOP/s | FA plain ms | torch FA2 ms | TFLOP/s | ratio |", "|---|---:|---:|---:|---:|---:|---:|"]
        for e in fwd:
            o, pl, t = e["ours"] or {}, e["plain"] or {}, e["peers"].get("torch-sdpa-fa2") or {}
            out.append(f"| {e['case']} | {fmt(o.get('median_ms'))} | {fmt((o.get('gflops') or 0) / 1000 or None, 1)} | {fmt(pl.get('median_ms'))} | "
                       f"{fmt(t.get('median_ms'))} | {fmt((t.get('gflops') or 0) / 1000 or None, 1)} | {fmt(ratio(t.get('median_ms'), o.get('median_ms')), 2)} |")
        out.append("")

    sparse = [e for e in joined if e["section"] == "sparse"]
    if sparse:
        out += ["## Block-sparse vs dense (S 8192)", "", "| case | FA ms | FA speedup vs FA dense | torch FA2 dense ms |", "|---|---:|---:|---:|"]
        for e in sparse:
            o, t = e["ours"] or {}, e["peers"].get("torch-sdpa-fa2") or {}
            out.append(f"| {e['case']} | {fmt(o.get('median_ms'))} | {fmt(o.get('speedup'), 2)} | {fmt(t.get('median_ms'))} |")
        out.append("")

    dec = [e for e in joined if e["section"] == "decode"]
    if dec:
        impls = sorted({i for e in dec for i in e["peers"]})
        out += ["## Decode (GB/s of K and V read once)", "", "| case | FA GB/s | FA % peak | FA plain GB/s | " + " | ".join(impls) + " |",
                "|---|---:|---:|---:|" + "---:|" * len(impls)]
        for e in dec:
            cells = []
            for i in impls:
                r = e["peers"].get(i) or {}
                cells.append(f"{r['gbs']:.0f}" if r.get("gbs") else (r.get("note") or "–"))
            ours, plain = e["ours"] or {}, e["plain"] or {}
            pct = ours.get("pct_read_peak")
            out.append(f"| {e['case']} | {fmt(ours.get('gbs'), 0)} | {fmt(pct * 100 if pct else None, 0)} | {fmt(plain.get('gbs'), 0)} | " + " | ".join(cells) + " |")
        out.append("")

    mha = [r for r in bench_rows if r.get("section") == "mha"]
    if mha:
        out += ["## Multi-head module vs its parts", "", "Module row: ratio = sum of the parts timed alone / module time (1: no overhead).", "",
                "| case | impl | ms | TFLOP/s | ratio |", "|---|---|---:|---:|---:|"]
        for r in mha:
            out.append(f"| {r.get('case')} | {r.get('impl')} | {fmt(r.get('median_ms'))} | {fmt((r.get('gflops') or 0) / 1000 or None, 1)} | {fmt(r.get('speedup'), 2)} |")
        out.append("")

    bw = [e for e in joined if e["section"] in ("softmax", "copy", "append")]
    if bw:
        out += ["## Bandwidth and module rows", "", "| section | case | impl | ms | GB/s | % peak HBM |", "|---|---|---|---:|---:|---:|"]
        for e in bw:
            for r in (e["ours"], e["plain"]):
                if r:
                    pct = r.get("pct_read_peak")
                    out.append(f"| {e['section']} | {e['case']} | {r['impl']} | {fmt(r.get('median_ms'))} | {fmt(r.get('gbs'), 0)} | {fmt(pct * 100 if pct else None, 0)} |")
        out.append("")
    other = [r for r in bench_rows if r.get("section") not in ("forward", "sparse", "decode", "softmax", "copy", "mha", "append")]
    if other:
        out += ["## Other rows", ""] + [f"- {r.get('section')} {r.get('case')} {r.get('impl')}: {fmt(r.get('median_ms'))} ms" for r in other] + [""]

    errors = list((bench or {}).get("errors", [])) + [e for d in peers for e in d.get("errors", [])]
    san = read_text(a.sanitizer_log)
    san_lines = [l.strip() for l in san.splitlines() if "ERROR SUMMARY" in l or "RACECHECK SUMMARY" in l]
    out += ["## Sanitizer", ""] + ([f"- {l}" for l in san_lines] if san_lines else ["- not run (see Stages)"]) + [""]
    if errors or problems:
        out += ["## Errors", ""] + [f"- {e}" for e in errors + problems] + [""]

    text = "\n".join(out)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(text)
    if a.peer_out:
        merged = {"schema": "fastattention-gpu-peer/1", "sources": [d.get("tool") for d in peers],
                  "devices": [d.get("device") for d in peers], "errors": [e for d in peers for e in d.get("errors", [])],
                  "rows": peer_rows}
        with open(a.peer_out, "w", encoding="utf-8") as f:
            json.dump(merged, f, indent=2)
            f.write("\n")
    print(f"wrote {a.out}" + (f" and {a.peer_out}" if a.peer_out else ""))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", help="bench.json from `FastAttention.Bench gpu --json`")
    p.add_argument("--peer", action="append", help="a peer JSON (repeatable)")
    p.add_argument("--peer-out", help="write the peers' rows merged into this JSON")
    p.add_argument("--env", help="env.txt of the suite")
    p.add_argument("--tests-log", help="tests.log of the suite")
    p.add_argument("--stages", help="stage results, tab-separated: name, result, seconds")
    p.add_argument("--sanitizer-log", help="sanitizer.log of the suite")
    p.add_argument("--out", required=True, help="summary markdown to write")
    return summarize(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
