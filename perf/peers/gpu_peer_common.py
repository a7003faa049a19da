"""What the PyTorch GPU peers (torch_gpu_attention.py, torch_gpu_decode.py) share: CUDA-event timing and the JSON writer."""

import json
import statistics


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
