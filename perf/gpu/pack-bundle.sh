#!/usr/bin/env bash
# pack-bundle.sh — builds what a CUDA host without a .NET SDK needs to run FastAttention's GPU checks, in one folder
# under 64 MiB:
#   apps.tar.xz            tests/ (FastAttention.Tests, the NUnit + Microsoft.Testing.Platform executable) and
#                          bench/ (FastAttention.Bench), published framework-dependent for linux-x64, Release
#   dotnet-runtime.tar.xz  the SDK's own `dotnet` host, host/ and shared/Microsoft.NETCore.App/<version> (no SDK)
#   run-gpu-suite.sh       the runner (see its header), summarize.py (the summary join), peers/ (PyTorch peers)
#   MANIFEST.txt           commit, date, runtime version, file sizes
#
#   perf/gpu/pack-bundle.sh [outdir]        (default: gpu-bundle/ at the repository root, ignored by git)
#
# Then, on the GPU host:  <outdir>/run-gpu-suite.sh <outdir> <log-dir> [--quick]
# Needs the .NET 10 SDK (and NuGet access for restore) here, xz, tar.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:-$repo_root/gpu-bundle}"
limit_bytes=$((64 * 1024 * 1024))
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

command -v dotnet >/dev/null || { echo "error: dotnet (the .NET 10 SDK) is not on PATH" >&2; exit 1; }
command -v xz >/dev/null || { echo "error: xz is not installed" >&2; exit 1; }

# The runtime the apps will run on: the newest Microsoft.NETCore.App 10.x of this SDK installation.
runtime_line="$(dotnet --list-runtimes | grep -E '^Microsoft\.NETCore\.App 10\.' | sort -V -k2 | tail -1)"
[[ -n "$runtime_line" ]] || { echo "error: no Microsoft.NETCore.App 10.x runtime in 'dotnet --list-runtimes'" >&2; exit 1; }
runtime_version="$(awk '{print $2}' <<<"$runtime_line")"
runtime_dir="$(sed -E 's/.*\[(.*)\]$/\1/' <<<"$runtime_line")"     # <root>/shared/Microsoft.NETCore.App
dotnet_root="$(cd "$runtime_dir/../.." && pwd)"
for need in dotnet host "shared/Microsoft.NETCore.App/$runtime_version"; do
    [[ -e "$dotnet_root/$need" ]] || { echo "error: $dotnet_root/$need not found" >&2; exit 1; }
done

stage="$(mktemp -d "${TMPDIR:-/tmp}/fastattention-bundle.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
echo "[pack] publishing the tests and the benchmark app (Release, linux-x64, framework-dependent)"
for project in tests/FastAttention.Tests perf/FastAttention.Bench; do
    name="$([[ $project == tests/* ]] && echo tests || echo bench)"
    dotnet publish "$repo_root/$project" -c Release -r linux-x64 --self-contained false -o "$stage/app/$name" -nologo -v quiet
done
# Not needed on Linux: Windows native libraries and satellite resource assemblies.
find "$stage/app" -maxdepth 2 -type f \( -name 'onnxruntime*.dll' -o -name '*.resources.dll' \) -delete
find "$stage/app" -mindepth 2 -type d -empty -delete

rm -rf "$out"
mkdir -p "$out/peers"
echo "[pack] compressing the apps"
tar -C "$stage/app" -cf - tests bench | xz -T0 -6 > "$out/apps.tar.xz"
echo "[pack] compressing the .NET runtime $runtime_version from $dotnet_root"
extras=()
for f in LICENSE.txt ThirdPartyNotices.txt; do [[ -f "$dotnet_root/$f" ]] && extras+=("$f"); done
tar -C "$dotnet_root" -cf - dotnet host "shared/Microsoft.NETCore.App/$runtime_version" "${extras[@]}" | xz -T0 -6 > "$out/dotnet-runtime.tar.xz"
cp "$repo_root/perf/gpu/run-gpu-suite.sh" "$repo_root/perf/gpu/summarize.py" "$out/"
cp "$repo_root/perf/peers/torch_gpu_attention.py" "$repo_root/perf/peers/torch_gpu_decode.py" "$repo_root/perf/peers/gpu_peer_common.py" "$out/peers/"
chmod +x "$out/run-gpu-suite.sh"

commit="$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git -C "$repo_root" status --porcelain 2>/dev/null | grep -qv '^??' && echo ' (with uncommitted changes)' || true)"
{
    echo "commit $commit$dirty"
    echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "runtime Microsoft.NETCore.App $runtime_version"
    (cd "$out" && find . -type f -printf '%s %P\n' | sort -k2)
} > "$out/MANIFEST.txt"

total=$(du -sb "$out" | awk '{print $1}')
echo "[pack] $out: $(( total / 1024 / 1024 )) MiB ($total bytes)"
(cd "$out" && find . -type f -printf '  %-32P %10s bytes\n' | sort)
if (( total > limit_bytes )); then
    echo "error: the bundle is over 64 MiB" >&2
    exit 1
fi
