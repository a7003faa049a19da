"""What the PyTorch GPU peers (torch_gpu_attention.py, torch_gpu_decode.py) share: the results document, the PyTorch/CUDA
check, the device description, CUDA-event timing and the JSON writer."""

import datetime
import json
import statistics
import sys

SCHEMA = "fastattention-gpu-peer/1"


def new_doc(tool, quick):
    """An empty results document for the peer script `tool`."""
    return {"schema": SCHEMA, "tool": tool, "command": " ".join(sys.argv),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "mode": "quick" if quick else "full", "device": None, "errors": [], "rows": []}


def import_torch_cuda(doc, out):
    """Returns (torch, torch.nn.functional) when PyTorch with CUDA is usable; otherwise records why in doc, writes it to
    out, prints the reason and returns None (the caller exits 1)."""
    try:
        import torch
        import torch.nn.functional as F
        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False")
        return torch, F
    except Exception as e:  # no torch, or no CUDA: say so in the JSON and fail
        doc["errors"].append(f"PyTorch with CUDA not available: {e}")
        write(out, doc)
        print(doc["errors"][0], file=sys.stderr)
        return None


def describe_device(torch, doc):
    """Fills doc["device"] for GPU 0 and returns the rows' device label ("cuda:0 <name>")."""
    props = torch.cuda.get_device_properties(0)
    doc["device"] = {"name": props.name, "torch": torch.__version__, "cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version(), "sm": f"sm_{props.major}{props.minor}"}
    return f"cuda:0 {props.name}"


def time_cuda(torch, fn, warmup, reps):
    """Runs fn warmup times untimed, then reps times between CUDA events; returns (median, min, max, count) in ms."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), min(times), max(times), len(times)


def write(path, doc):
    """Writes the peer's results document as indented JSON with a trailing newline."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
