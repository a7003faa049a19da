#!/usr/bin/env bash
# run-gpu-suite.sh — runs FastAttention's GPU checks on a CUDA host that has no .NET SDK, from a bundle made by
# pack-bundle.sh: unpacks the .NET runtime, then, stage by stage with timestamps (a failing stage does not stop
# the others):
#   env        nvidia-smi, driver, CUDA, NVRTC (and the library versions FastAttention resolves)     -> env.txt
#   probe      `bench gpu --probe`; if nvidia-smi lists a GPU but the probe fails, it retries with NVRTC/cuBLAS
#              from the Python environment's nvidia packages, and then the suite fails with the probe's reason
#   warm       `bench gpu --warm`: every kernel compiled for the device's own architecture, in parallel, into the
#              suite's kernel cache ($FASTATTN_KERNEL_CACHE); registers, spills, smem per kernel   -> tests.log
#              (sm_80/sm_90 compile-all with the zero-spill asserts is CI's KernelCompileTests, not run here)
#   tests      [Category("Gpu")] tests: plain kernels first (names with "Plain"), then the rest        -> tests.log
#   bench      the C# GPU benchmarks (bench gpu), CUDA-event timing; JSON rewritten after each section -> bench.json
#   peers      PyTorch FlashAttention-2 SDPA and decode peers on the same shapes, same run            -> peer.json
#   sanitizer  a cheap check first (compute-sanitizer --version and one small GPU test under memcheck;
#              "skipped: <reason>" if the tool cannot run here), then memcheck and racecheck on a small
#              representative subset                                                                -> sanitizer.log
#   profile    only when PROFILE_KERNELS is set (an ncu --kernel-name regex, e.g. 'fa_paged_decode_hd128_f16'):
#              Nsight Compute's speed-of-light, occupancy, launch, warp-state and memory sections for
#              PROFILE_COUNT (2) launches after PROFILE_SKIP (3), while `bench gpu --quick --only PROFILE_SECTIONS`
#              (decode) runs                                                                           -> profile.txt
#   summary    GPU, driver, CUDA/NVRTC, registers/spills per kernel, ratios vs the peer              -> summary.md
# Everything else a stage prints goes to suite.log. At most 8 files, flat, in <log-dir>.
#
#   perf/gpu/run-gpu-suite.sh <bundle-dir> <log-dir> [--quick]
#
# Budget: a device lease is 15 minutes including its 1-2 minute start, and one command may run 600 s. The whole
# suite, unpacking, env and probe included, runs within SUITE_BUDGET seconds: 480 (8 minutes), or 240 with --quick.
# Each stage has a cap (seconds, overridable through the environment), and no stage runs past the budget less the
# summary's 15 s: a stage is cut to what is left, or skipped when under 5 s are left.
#   full:   unpack 30, env 20, probe 20, warm 45, tests 130, bench 100, peers 60, sanitizer 60, summary 15 = 480
#   quick:  unpack 15, env 15, probe 15, warm 20, tests 80,  bench 35,  peers 20, sanitizer 25, summary 15 = 240
#   (measured on an H200: unpack 4 s, env 8, probe 1, warm 8, tests 18 + 45, bench 48 full, peers 12 full,
#   sanitizer check 2 + memcheck 6 + racecheck 9 on the subset)
#   (CAP_UNPACK, CAP_ENV, CAP_PROBE, CAP_WARM, CAP_TESTS, CAP_BENCH, CAP_PEERS, CAP_SANITIZER); the profile stage,
#   CAP_PROFILE (60), runs only when asked for, so raise SUITE_BUDGET by as much when you ask for it.
# Exit status: 0 when every stage that could run passed, 1 otherwise (a stage failed or timed out, or a GPU is
# listed but unusable); stages that need a GPU report "no GPU" and are skipped (not failed) where there is none.
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

suite_start=$(date +%s)
summary_reserve=15
if (( quick )); then
    : "${SUITE_BUDGET:=240}" "${CAP_UNPACK:=15}" "${CAP_ENV:=15}" "${CAP_PROBE:=15}" "${CAP_WARM:=20}"
    : "${CAP_TESTS:=80}" "${CAP_BENCH:=35}" "${CAP_PEERS:=20}" "${CAP_SANITIZER:=25}"
else
    : "${SUITE_BUDGET:=480}" "${CAP_UNPACK:=30}" "${CAP_ENV:=20}" "${CAP_PROBE:=20}" "${CAP_WARM:=45}"
    : "${CAP_TESTS:=130}" "${CAP_BENCH:=100}" "${CAP_PEERS:=60}" "${CAP_SANITIZER:=60}"
fi
deadline=$(( suite_start + SUITE_BUDGET - summary_reserve ))

work="$(mktemp -d "${TMPDIR:-/tmp}/fastattention-gpu-suite.XXXXXX")"
trap 'rm -rf "$work"' EXIT
suite_log="$logs/suite.log"
tests_log="$logs/tests.log"
sanitizer_log="$logs/sanitizer.log"
env_txt="$logs/env.txt"
: > "$suite_log"; : > "$tests_log"; : > "$sanitizer_log"; : > "$env_txt"
status_file="$work/stages.tsv"
: > "$status_file"

say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$suite_log"; }

# capped <cap>: the cap, cut to the seconds left before the deadline.
capped() {
    local left=$(( deadline - $(date +%s) ))
    (( left < $1 )) && echo "$left" || echo "$1"
}

# run_stage <name> <cap seconds> <log file> <command...>: time-capped, output appended to the log, status recorded.
# The command's exit status is left in stage_rc (-1 when skipped for want of time).
run_stage() {
    local name=$1 cap=$2 log=$3
    shift 3
    local t0 rc
    cap=$(capped "$cap")
    if (( cap < 5 )); then
        skip_stage "$name" "suite budget of ${SUITE_BUDGET}s spent"
        stage_rc=-1
        return 0
    fi
    t0=$(date +%s)
    say "stage $name: start (cap ${cap}s)"
    echo "===== stage $name: $* =====" >> "$log"
    timeout --kill-after=5 "$cap" "$@" >> "$log" 2>&1
    rc=$?
    local dt=$(( $(date +%s) - t0 ))
    local verdict=passed
    if (( rc == 124 || rc == 137 )); then verdict="timed out"; elif (( rc != 0 )); then verdict="failed (exit $rc)"; fi
    say "stage $name: $verdict after ${dt}s"
    printf '%s\t%s\t%s\n' "$name" "$verdict" "$dt" >> "$status_file"
    stage_rc=$rc
    return 0
}

skip_stage() {
    say "stage $1: skipped: $2"
    printf '%s\t%s\t%s\n' "$1" "skipped: $2" 0 >> "$status_file"
}

# ---- .NET runtime and apps ----------------------------------------------------------------------------------
say "unpacking the .NET runtime and the apps into $work"
mkdir -p "$work/dotnet" "$work/app"
timeout "$CAP_UNPACK" tar -C "$work/dotnet" -xJf "$bundle/dotnet-runtime.tar.xz" || { say "error: cannot unpack the runtime"; exit 1; }
timeout "$CAP_UNPACK" tar -C "$work/app" -xJf "$bundle/apps.tar.xz" || { say "error: cannot unpack the apps"; exit 1; }
export DOTNET_ROOT="$work/dotnet"
export PATH="$DOTNET_ROOT:$PATH"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# One kernel cache for every stage: the warm stage compiles each kernel once, the later stages load it from disk.
export FASTATTN_KERNEL_CACHE="$work/kernel-cache"
tests_dll="$work/app/tests/FastAttention.Tests.dll"
bench_dll="$work/app/bench/FastAttention.Bench.dll"
say "unpacked in $(( $(date +%s) - suite_start ))s; runtime: $(timeout 10 "$DOTNET_ROOT/dotnet" --list-runtimes 2>&1 | tr '\n' ' ')"

# ---- env ----------------------------------------------------------------------------------------------------
# One capped stage: a hanging nvidia-smi or a slow `import torch` cannot eat the budget.
collect_env() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cores"
    echo "bundle: $(cat "$bundle/MANIFEST.txt" 2>/dev/null | tr '\n' ' ')"
    echo "mode: $([[ $quick == 1 ]] && echo quick || echo full), budget ${SUITE_BUDGET}s"
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
    python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available()); sys.exit(0 if torch.cuda.is_available() else 1)' 2>&1 | tail -1
    (( ${PIPESTATUS[0]} == 0 )) && : > "$work/torch-cuda"
    echo "--- FastAttention info"
    "$DOTNET_ROOT/dotnet" "$bench_dll" info
}
export -f collect_env
export bundle quick SUITE_BUDGET work bench_dll
run_stage env "$CAP_ENV" "$env_txt" bash -c collect_env

# ---- probe: is there a usable CUDA device? -------------------------------------------------------------------
# probe_once: 0 if `gpu --probe` finds a device; its output (the reason when not) is in $work/probe.txt and env.txt.
probe_once() {
    local cap rc
    cap=$(capped "$CAP_PROBE")
    (( cap < 5 )) && { echo "no time left for the probe" > "$work/probe.txt"; return 1; }
    timeout --kill-after=5 "$cap" "$DOTNET_ROOT/dotnet" "$bench_dll" gpu --probe > "$work/probe.txt" 2>&1
    rc=$?
    (( rc == 124 || rc == 137 )) && echo "the probe timed out after ${cap}s" >> "$work/probe.txt"
    { echo "--- gpu --probe (exit $rc)"; cat "$work/probe.txt"; } >> "$env_txt"
    return $rc
}
# NVRTC and cuBLAS of the Python environment's nvidia-* wheels (nvidia.cuda_nvrtc, nvidia.cublas), as VAR=path lines.
python_cuda_libraries() {
    timeout 20 python3 - <<'EOF' 2>/dev/null
import glob, importlib, os
for module, variable, pattern in (("nvidia.cuda_nvrtc", "FASTATTN_NVRTC_PATH", "libnvrtc.so*"),
                                  ("nvidia.cublas", "FASTATTN_CUBLAS_PATH", "libcublas.so*")):
    try:
        package = importlib.import_module(module)
    except Exception:
        continue
    for folder in list(getattr(package, "__path__", [])):
        found = sorted(glob.glob(os.path.join(folder, "lib", pattern)), key=len)
        if found:
            print(f"{variable}={found[0]}")
            break
EOF
}
have_gpu=0
gpu_listed=0
if command -v nvidia-smi >/dev/null 2>&1 && timeout 10 nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then gpu_listed=1; fi
t0=$(date +%s)
if probe_once; then
    have_gpu=1
elif (( gpu_listed )); then
    say "nvidia-smi lists a GPU but the probe failed: $(tail -1 "$work/probe.txt"); trying the Python environment's NVRTC/cuBLAS"
    retry=0
    while IFS='=' read -r variable path; do
        [[ -n "$variable" && -z "${!variable:-}" ]] || continue
        export "$variable=$path"
        say "$variable=$path (from the Python environment)"
        retry=1
    done < <(python_cuda_libraries)
    (( retry )) && probe_once && have_gpu=1
fi
if (( have_gpu )); then
    printf '%s\t%s\t%s\n' probe passed $(( $(date +%s) - t0 )) >> "$status_file"
elif (( gpu_listed )); then
    reason="$(tail -1 "$work/probe.txt")"
    say "error: a GPU is listed (nvidia-smi -L) but not usable: $reason"
    printf '%s\t%s\t%s\n' probe "failed (GPU listed but unusable: ${reason//$'\t'/ })" $(( $(date +%s) - t0 )) >> "$status_file"
else
    printf '%s\t%s\t%s\n' probe "skipped: no GPU" $(( $(date +%s) - t0 )) >> "$status_file"
fi
say "usable CUDA device (driver, device and NVRTC; the reason is in env.txt): $([[ $have_gpu == 1 ]] && echo yes || echo 'no GPU')"

# ---- warm: compile every kernel once, for this device, into the shared cache ------------------------------------
# The ptxas report (registers, spills, smem per kernel) goes to tests.log; the zero-spill asserts for sm_80 and
# sm_90 are CI's (KernelCompileTests), so GPU runs do not spend their lease on them.
if (( have_gpu )); then
    run_stage warm "$CAP_WARM" "$tests_log" "$DOTNET_ROOT/dotnet" "$bench_dll" gpu --warm
else
    skip_stage warm "no GPU"
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
if (( have_gpu )) && [[ -f "$work/torch-cuda" ]]; then
    peer_cap=$(( CAP_PEERS / 2 ))
    run_stage peer-attention "$peer_cap" "$suite_log" python3 "$bundle/peers/torch_gpu_attention.py" --out "$work/peer-attention.json" "${quick_flag[@]}"
    run_stage peer-decode $(( CAP_PEERS - peer_cap )) "$suite_log" python3 "$bundle/peers/torch_gpu_decode.py" --out "$work/peer-decode.json" "${quick_flag[@]}"
elif (( have_gpu )); then
    skip_stage peers "PyTorch with CUDA is not importable (python3 -c 'import torch' failed or no CUDA)"
else
    skip_stage peers "no GPU"
fi

# ---- compute-sanitizer on a small subset ----------------------------------------------------------------------
# A cheap check first: the tool's version and one small emulator-free GPU test (the utility kernels, f32) under
# memcheck. If the tool cannot run here (some hosts refuse it the device) the stage is "skipped: <reason>", not failed;
# a memcheck error in the check (exit 3) is a real failure. Then the default subset, small shapes of each kernel
# family: the softmax in place (plain, warp, block and online kernels), the forward on BHSD views (plain and tuned),
# decode over a contiguous cache (tuned, forced splits + combine, plain; it appends through the append kernel), and
# decode over a paged cache of 8-key pages (bf16, window; the tuned kernel's K/V tiles span 8 pages).
# SANITIZER_FILTER (an MTP --filter expression) replaces the subset; full runs memcheck and racecheck, --quick memcheck.
sanitizer_filter="${SANITIZER_FILTER:-FullyQualifiedName~CudaSoftmaxTests.InPlaceEqualsOutOfPlace|FullyQualifiedName~GpuForwardApiTests.BhsdViewsGiveTheContiguousResultBitForBit|FullyQualifiedName~GpuDecodeTests.ContiguousCacheDecodesThroughTheSameKernels|Name~L[7777]}"
sanitizer_check_filter="FullyQualifiedName~GpuRuntimeTests.UtilityKernelsMatchTheCpu&Name~Float32"
sanitize() {
    local tool=$1 filter=$2
    compute-sanitizer --tool "$tool" --print-limit 50 --error-exitcode 3 \
        "$DOTNET_ROOT/dotnet" "$tests_dll" --filter "$filter" --no-progress --show-test-results failed
}
export -f sanitize
export tests_dll
if (( ! have_gpu )); then
    skip_stage sanitizer "no GPU"
elif ! command -v compute-sanitizer >/dev/null 2>&1; then
    skip_stage sanitizer "compute-sanitizer not found"
elif ! version="$(timeout 10 compute-sanitizer --version 2>&1)"; then
    skip_stage sanitizer "compute-sanitizer --version failed: $(echo "$version" | tail -1)"
else
    echo "$version" >> "$sanitizer_log"
    if (( quick )); then tools=(memcheck); else tools=(memcheck racecheck); fi
    share=$(( CAP_SANITIZER / (${#tools[@]} + 1) ))
    check_start=$(wc -l < "$sanitizer_log")
    run_stage sanitizer-check "$share" "$sanitizer_log" bash -c 'sanitize memcheck "$1"' _ "$sanitizer_check_filter"
    # The tool ran the tests when the test host printed its run summary: a failing test under the tool is a finding
    # (the stage stays failed), and the subset still runs.
    check_ran=0
    tail -n +"$((check_start + 1))" "$sanitizer_log" | grep -q '^Test run summary:' && check_ran=1
    if (( stage_rc == 0 || (stage_rc != -1 && check_ran) )); then
        for tool in "${tools[@]}"; do
            run_stage "sanitizer-$tool" "$share" "$sanitizer_log" bash -c 'sanitize "$1" "$2"' _ "$tool" "$sanitizer_filter"
        done
    elif (( stage_rc != 3 && stage_rc != -1 )); then
        # Not a finding: the tool could not run the check (refused device, timeout, ...). Record it as skipped.
        why="$(grep -m1 -iE 'error|refus|not supported|timed out' "$sanitizer_log" | cut -c1-160)"
        sed -i '$d' "$status_file"
        skip_stage sanitizer "the check under compute-sanitizer did not run (exit $stage_rc${why:+: $why})"
    fi
fi

# ---- Nsight Compute profile of chosen kernels (only when asked for) ------------------------------------------------
if [[ -n "${PROFILE_KERNELS:-}" ]]; then
    if (( ! have_gpu )); then
        skip_stage profile "no GPU"
    elif ! command -v ncu >/dev/null 2>&1; then
        skip_stage profile "ncu not found"
    else
        run_stage profile "${CAP_PROFILE:-60}" "$logs/profile.txt" ncu --kernel-name "regex:$PROFILE_KERNELS" \
            --launch-skip "${PROFILE_SKIP:-3}" --launch-count "${PROFILE_COUNT:-2}" \
            --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
            "$DOTNET_ROOT/dotnet" "$bench_dll" gpu --quick --only "${PROFILE_SECTIONS:-decode}"
    fi
fi

# ---- summary --------------------------------------------------------------------------------------------------
say "total $(( $(date +%s) - suite_start ))s"
timeout "$summary_reserve" python3 "$bundle/summarize.py" --env "$env_txt" --tests-log "$tests_log" --bench "$logs/bench.json" \
    --peer "$work/peer-attention.json" --peer "$work/peer-decode.json" --peer-out "$logs/peer.json" \
    --stages "$status_file" --sanitizer-log "$sanitizer_log" --out "$logs/summary.md" >> "$suite_log" 2>&1 \
    || say "summary: summarize.py failed (see suite.log)"
say "logs in $logs: $(cd "$logs" && ls | tr '\n' ' ')"
if grep -qP '\t(failed|timed out)' "$status_file"; then
    say "some stages failed"
    exit 1
fi
exit 0
