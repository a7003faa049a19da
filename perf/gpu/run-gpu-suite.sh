#!/usr/bin/env bash
# run-gpu-suite.sh — runs FastAttention's GPU checks on a CUDA host that has no .NET SDK, from a bundle made by
# pack-bundle.sh: unpacks the .NET runtime, then, stage by stage with timestamps (a failing stage does not stop
# the others):
#   env        nvidia-smi, driver, CUDA, NVRTC (and the library versions FastAttention resolves)     -> env.txt
#   compile    every kernel compiled by the host's NVRTC for sm_80/sm_90: registers, spills, smem    -> tests.log
#              (full run only; --quick relies on the bench's report for the device's architecture)
#   tests      [Category("Gpu")] tests: plain kernels first (names with "Plain"), then the rest        -> tests.log
#   bench      the C# GPU benchmarks (bench gpu), CUDA-event timing                                   -> bench.json
#   peers      PyTorch FlashAttention-2 SDPA and decode peers on the same shapes, same run            -> peer.json
#   sanitizer  compute-sanitizer memcheck and racecheck on a small representative subset (if present) -> sanitizer.log
#   summary    GPU, driver, CUDA/NVRTC, registers/spills per kernel, ratios vs the peer              -> summary.md
# Everything else a stage prints goes to suite.log. At most 7 files, flat, in <log-dir>.
#
#   perf/gpu/run-gpu-suite.sh <bundle-dir> <log-dir> [--quick]
#
# Budget: a device lease of 15 minutes including start-up, so each stage has a time cap (seconds, overridable
# through the environment: CAP_TESTS, CAP_BENCH, CAP_PEERS, CAP_SANITIZER) summing to under 8 minutes, or under
# 4 with --quick. Exit status: 0 when every stage that could run passed, 1 otherwise; stages that need a GPU
# report "no GPU" and are skipped (not failed) where there is none.
set -uo pipefail

usage() { echo "usage: $0 <bundle-dir> <log-dir> [--quick]" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
bundle="$(cd "$1" 2>/dev/null && pwd)" || { echo "error: bundle folder '$1' not found" >&2; exit 2; }
logs="$2"
quick=0
if [[ $# -eq 3 ]]; then
    [[ "$3" == "--quick" ]] || usage
    quick=1
fi
for f in dotnet-runtime.tar.xz apps.tar.xz summarize.py; do
    [[ -f "$bundle/$f" ]] || { echo "error: $bundle/$f is missing (make the bundle with perf/gpu/pack-bundle.sh)" >&2; exit 2; }
done
mkdir -p "$logs"
logs="$(cd "$logs" && pwd)"

if (( quick )); then
    : "${CAP_TESTS:=90}" "${CAP_BENCH:=50}" "${CAP_PEERS:=40}" "${CAP_SANITIZER:=25}"
else
    : "${CAP_TESTS:=180}" "${CAP_BENCH:=120}" "${CAP_PEERS:=90}" "${CAP_SANITIZER:=45}"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/fastattention-gpu-suite.XXXXXX")"
trap 'rm -rf "$work"' EXIT
suite_log="$logs/suite.log"
tests_log="$logs/tests.log"
sanitizer_log="$logs/sanitizer.log"
env_txt="$logs/env.txt"
: > "$suite_log"; : > "$tests_log"; : > "$sanitizer_log"; : > "$env_txt"
status_file="$work/stages.tsv"
: > "$status_file"
suite_start=$(date +%s)

say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$suite_log"; }

# run_stage <name> <cap seconds> <log file> <command...>: time-capped, output appended to the log, status recorded.
run_stage() {
    local name=$1 cap=$2 log=$3
    shift 3
    local t0 rc
    t0=$(date +%s)
    say "stage $name: start (cap ${cap}s)"
    echo "===== stage $name: $* =====" >> "$log"
    timeout --kill-after=10 "$cap" "$@" >> "$log" 2>&1
    rc=$?
    local dt=$(( $(date +%s) - t0 ))
    local verdict=passed
    if (( rc == 124 || rc == 137 )); then verdict="timed out"; elif (( rc != 0 )); then verdict="failed (exit $rc)"; fi
    say "stage $name: $verdict after ${dt}s"
    printf '%s\t%s\t%s\n' "$name" "$verdict" "$dt" >> "$status_file"
    return 0
}

skip_stage() {
    say "stage $1: skipped: $2"
    printf '%s\t%s\t%s\n' "$1" "skipped: $2" 0 >> "$status_file"
}

# ---- .NET runtime and apps ----------------------------------------------------------------------------------
say "unpacking the .NET runtime and the apps into $work"
mkdir -p "$work/dotnet" "$work/app"
tar -C "$work/dotnet" -xJf "$bundle/dotnet-runtime.tar.xz" || { say "error: cannot unpack the runtime"; exit 1; }
tar -C "$work/app" -xJf "$bundle/apps.tar.xz" || { say "error: cannot unpack the apps"; exit 1; }
export DOTNET_ROOT="$work/dotnet"
export PATH="$DOTNET_ROOT:$PATH"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# One kernel cache for every stage: the tests compile each kernel once, the later stages load it from disk.
export FASTATTN_KERNEL_CACHE="$work/kernel-cache"
tests_dll="$work/app/tests/FastAttention.Tests.dll"
bench_dll="$work/app/bench/FastAttention.Bench.dll"
say "runtime: $("$DOTNET_ROOT/dotnet" --list-runtimes 2>&1 | tr '\n' ' ')"

# ---- env ----------------------------------------------------------------------------------------------------
have_gpu=0
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cores"
    echo "bundle: $(cat "$bundle/MANIFEST.txt" 2>/dev/null | tr '\n' ' ')"
    echo "mode: $([[ $quick == 1 ]] && echo quick || echo full)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "--- nvidia-smi"
        nvidia-smi 2>&1
        echo "--- nvidia-smi --query-gpu"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.memory,power.limit,pcie.link.gen.current --format=csv 2>&1
    else
        echo "nvidia-smi: not found"
    fi
    if command -v nvcc >/dev/null 2>&1; then echo "--- nvcc"; nvcc --version 2>&1 | tail -2; else echo "nvcc: not found"; fi
    if command -v compute-sanitizer >/dev/null 2>&1; then echo "compute-sanitizer: $(command -v compute-sanitizer)"; else echo "compute-sanitizer: not found"; fi
    echo "--- python / torch"
    python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1
    echo "--- FastAttention info"
} >> "$env_txt" 2>&1
run_stage env 60 "$env_txt" "$DOTNET_ROOT/dotnet" "$bench_dll" info
if "$DOTNET_ROOT/dotnet" "$bench_dll" gpu --probe >> "$env_txt" 2>&1; then
    have_gpu=1
fi
say "usable CUDA device (driver, device and NVRTC; the reason is in env.txt): $([[ $have_gpu == 1 ]] && echo yes || echo 'no GPU')"

# ---- compile report (NVRTC only; no GPU needed) ---------------------------------------------------------------
# --quick skips it: the bench's JSON carries the ptxas report for the device's own architecture.
if (( quick )); then
    skip_stage compile "--quick (the bench reports the kernels for this device)"
else
    run_stage compile 120 "$tests_log" "$DOTNET_ROOT/dotnet" "$tests_dll" --filter "FullyQualifiedName~KernelCompileTests" --show-stdout All --no-progress
fi

# ---- GPU tests: plain kernels first ---------------------------------------------------------------------------
if (( have_gpu )); then
    half=$(( CAP_TESTS / 3 ))
    run_stage tests-plain "$half" "$tests_log" "$DOTNET_ROOT/dotnet" "$tests_dll" --filter "TestCategory=Gpu&Name~Plain" --no-progress --show-test-results failed
    run_stage tests-rest $(( CAP_TESTS - half )) "$tests_log" "$DOTNET_ROOT/dotnet" "$tests_dll" --filter "TestCategory=Gpu&Name!~Plain" --no-progress --show-test-results failed
else
    # Still run them: each must be ignored cleanly with its reason (this is what a GPU-less host checks).
    run_stage tests-skip "$CAP_TESTS" "$tests_log" "$DOTNET_ROOT/dotnet" "$tests_dll" --filter "TestCategory=Gpu" --no-progress --show-test-results failed
fi

# ---- benchmarks and peers in the same run ---------------------------------------------------------------------
quick_flag=()
(( quick )) && quick_flag=(--quick)
run_stage bench "$CAP_BENCH" "$suite_log" "$DOTNET_ROOT/dotnet" "$bench_dll" gpu --json "$logs/bench.json" "${quick_flag[@]}"
if (( have_gpu )) && python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    peer_cap=$(( CAP_PEERS / 2 ))
    run_stage peer-attention "$peer_cap" "$suite_log" python3 "$bundle/peers/torch_gpu_attention.py" --out "$work/peer-attention.json" "${quick_flag[@]}"
    run_stage peer-decode $(( CAP_PEERS - peer_cap )) "$suite_log" python3 "$bundle/peers/torch_gpu_decode.py" --out "$work/peer-decode.json" "${quick_flag[@]}"
elif (( have_gpu )); then
    skip_stage peers "PyTorch with CUDA is not importable (python3 -c 'import torch' failed or no CUDA)"
else
    skip_stage peers "no GPU"
fi

# ---- compute-sanitizer on a small subset ----------------------------------------------------------------------
# Default subset, small shapes of each kernel family: the softmax in place (plain, warp, block and online kernels), the
# forward on BHSD views (plain and tuned), decode over a contiguous cache (tuned, forced splits + combine, plain; it
# appends through the append kernel). SANITIZER_FILTER (an MTP --filter expression) replaces it.
sanitizer_filter="${SANITIZER_FILTER:-FullyQualifiedName~CudaSoftmaxTests.InPlaceEqualsOutOfPlace|FullyQualifiedName~GpuForwardApiTests.BhsdViewsGiveTheContiguousResultBitForBit|FullyQualifiedName~GpuDecodeTests.ContiguousCacheDecodesThroughTheSameKernels}"
if (( ! have_gpu )); then
    skip_stage sanitizer "no GPU"
elif ! command -v compute-sanitizer >/dev/null 2>&1; then
    skip_stage sanitizer "compute-sanitizer not found"
else
    for tool in memcheck racecheck; do
        run_stage "sanitizer-$tool" "$CAP_SANITIZER" "$sanitizer_log" compute-sanitizer --tool "$tool" --print-limit 50 --error-exitcode 3 \
            "$DOTNET_ROOT/dotnet" "$tests_dll" --filter "$sanitizer_filter" --no-progress --show-test-results failed
    done
fi

# ---- summary --------------------------------------------------------------------------------------------------
say "total $(( $(date +%s) - suite_start ))s"
python3 "$bundle/summarize.py" --env "$env_txt" --tests-log "$tests_log" --bench "$logs/bench.json" \
    --peer "$work/peer-attention.json" --peer "$work/peer-decode.json" --peer-out "$logs/peer.json" \
    --stages "$status_file" --sanitizer-log "$sanitizer_log" --out "$logs/summary.md" >> "$suite_log" 2>&1 \
    || say "summary: summarize.py failed (see suite.log)"
say "logs in $logs: $(cd "$logs" && ls | tr '\n' ' ')"
if grep -qP '\t(failed|timed out)' "$status_file"; then
    say "some stages failed"
    exit 1
fi
exit 0
