#!/usr/bin/env bash
# One-shot GPU check: on a machine with CUDA, in at most 8 minutes (the checks' limits add up to 480 s), run
#   1. the GPU-marked tests (pytest -m gpu),
#   2. the labeler benchmark on CUDA,
#   3. the DALI GPU decode path (the data benchmark's ImageNet-style preset),
#   3b. the on-device multi-crop against the torchvision workers (augment benchmark, CIFAR batch 256),
#   3c. LARS's batched (foreach) step against one tensor at a time and lightly's LARS,
#   3d. contiguous against channels_last memory for a ResNet-18 at 32 and 224 px,
#   4. the whole-loop throughput benchmark at batch 256 in bf16 (with the lightly rows when installed),
#   5. a 2-epoch MIRA pretraining on generated CIFAR-shaped data with each loader (torchvision, device;
#      dali on an image folder of 32x32 JPEGs),
# and write one Markdown report: per check the command, its exit status, its wall time and its output
# (tables in full, logs' last lines).
#
#   bash benchmarks/gpu_check.sh [REPORT.md]        # default: gpu_check.md in the current folder
#
# Environment: PYTHON (default .venv/bin/python if present, else python), GPU_CHECK_WORKERS (DataLoader
# workers, default: min(8, cores)). Each check has its own time limit; a check that fails or times out
# is reported and the next one runs. The exit status is the number of checks that failed.
set -u
cd "$(dirname "$0")/.."
REPORT=$(realpath -m "${1:-gpu_check.md}")
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
CORES=$(nproc)
WORKERS=${GPU_CHECK_WORKERS:-$((CORES < 8 ? CORES : 8))}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to $PYTHON; nothing to check" >&2
    exit 1
fi

{
    echo "# GPU check"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo unknown)"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $CORES cores; $WORKERS loader workers"
    echo "- $("$PYTHON" -c "import torch, torchvision; print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, CUDA {torch.version.cuda}')")"
    echo
} >"$REPORT"

# check TITLE SECONDS TAIL_LINES COMMAND...: run COMMAND with a time limit, append its section to the report.
check() {
    local title=$1 limit=$2 lines=$3
    shift 3
    local log="$WORK/log" start end status
    echo "gpu_check: $title" >&2
    start=$(date +%s)
    timeout --signal=INT --kill-after=15 "$limit" "$@" >"$log" 2>&1
    status=$?
    end=$(date +%s)
    [ "$status" -ne 0 ] && FAILED=$((FAILED + 1))
    local verdict="exit status $status"
    [ "$status" -eq 124 ] && verdict="timed out after ${limit} s"
    {
        echo "## $title"
        echo
        echo "\`$*\` — $verdict, $((end - start)) s"
        echo
        echo '```text'
        grep -v -e '^\s*warnings.warn' -e 'Warning:' "$log" | tail -n "$lines"
        echo '```'
        echo
    } >>"$REPORT"
}

check "GPU-marked tests" 90 40 \
    "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests
check "Labelers on CUDA" 40 30 \
    "$PYTHON" benchmarks/labelers.py --device cuda --no-fail
check "DALI GPU decode (data benchmark, ImageNet-style preset)" 40 20 \
    "$PYTHON" benchmarks/data.py --presets imagenet --workers "$WORKERS" --batch-size 64 --images 512 --no-fail
check "On-device multi-crop vs torchvision workers (CIFAR, batch 256)" 30 20 \
    "$PYTHON" benchmarks/augment.py --device cuda --workers "$WORKERS" --batch-size 256 --images 4096 \
    --repeats 3 --no-fail
check "LARS step on CUDA (foreach, per tensor, lightly)" 15 12 \
    "$PYTHON" benchmarks/optimizer.py --device cuda --no-fail
check "Memory format on CUDA (contiguous, channels_last)" 15 14 \
    "$PYTHON" benchmarks/memory_format.py --device cuda --sizes 32,224 --batch 256 --large-batch 128 \
    --rounds 3 --no-fail
check "Whole-loop throughput, batch 256, bf16" 130 40 \
    "$PYTHON" benchmarks/throughput.py --device cuda --precision bf16 --batch-size 256 \
    --imagenet-batch-size 64 --workers "$WORKERS" --steps 5 --rounds 2 --no-fail

# Generated data for the pretraining runs: a CIFAR-10 archive and an image folder of 32x32 JPEGs.
"$PYTHON" - "$WORK" <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from data import make_cifar, make_image_folder

root = Path(sys.argv[1])
make_cifar(root / "cifar", 2560)
make_image_folder(root / "folder", 2560, (32, 32))
EOF

PRETRAIN='import sys
sys.path.insert(0, "benchmarks")
from data import no_checksums
from sslib.app.cli import pretrain_main
with no_checksums():
    raise SystemExit(pretrain_main(sys.argv[1:]))'
COMMON=(method=mira trainer.max_epochs=2 data.batch_size=256 "data.num_workers=$WORKERS" baseline_eval=false
    trainer.enable_progress_bar=false resume=never)
for loader in torchvision device; do
    check "MIRA 2 epochs, CIFAR-shaped, data.loader=$loader" 40 12 \
        "$PYTHON" -c "$PRETRAIN" "${COMMON[@]}" data=cifar10 "data.root=$WORK/cifar" "data.loader=$loader" \
        "run_dir=$WORK/run-$loader"
done
check "MIRA 2 epochs, 32x32 JPEG folder, data.loader=dali" 40 12 \
    "$PYTHON" -c "$PRETRAIN" "${COMMON[@]}" data=folder "data.root=$WORK/folder" data.loader=dali \
    "data.global_crops.size=32" "run_dir=$WORK/run-dali"

echo "gpu_check: $FAILED check(s) failed; report in $REPORT" >&2
echo "**$FAILED check(s) failed.**" >>"$REPORT"
exit "$FAILED"
