#!/usr/bin/env bash
# One command that checks the project on a CUDA machine and prints one summary:
#
#   bash benchmarks/gpu_check.sh            # from the repository root, any folder works
#
# 1. the CUDA and CuPy tests (pytest -m gpu; the CuPy ones skip when CuPy is not installed),
# 2. benchmarks/bench_splatting.py (its PyTorch-vs-CuPy table appears on CUDA),
# 3. one bf16 training step of train_vae.py, train_unet.py and train_frame_synthesis.py on
#    tiny generated data (every script's whole path: data, model, step, checkpoint, save),
# 4. sample.py on the shipped weights (weights/default) with --device cuda.
#
# Without a CUDA GPU it says so and exits 0 (nothing to check here). GPU_CHECK_DEVICE=cpu
# runs the same steps on the CPU (slowly, fp32/bf16 autocast on CPU) to check the script
# itself. Exit status: 0 when every step passed or was skipped, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
if [ -x .venv/bin/python ] && [ "$PYTHON" = python ]; then PYTHON=.venv/bin/python; fi

device=${GPU_CHECK_DEVICE:-}
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "gpu_check: error: $PYTHON cannot import torch; install the requirements first" >&2
    exit 2
fi
if [ -z "$device" ]; then
    if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        device=cuda
    else
        echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False);"
        echo "gpu_check: nothing to check here. Run it on a machine with a GPU."
        exit 0
    fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$work"' EXIT
summary=()
failed=0
log_dir=${GPU_CHECK_LOGS:-outputs/gpu_check}  # kept after the run (outputs/ is not tracked)
mkdir -p "$log_dir"

# step NAME COMMAND...: run it, keep its log, record PASS/FAIL and the seconds it took.
step() {
    local name=$1
    shift
    local start end status
    start=$(date +%s.%N)
    echo "== $name: $*"
    "$@" >"$log_dir/$name.log" 2>&1
    status=$?
    end=$(date +%s.%N)
    local seconds
    seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    if [ $status -eq 0 ]; then
        summary+=("PASS  $name  ${seconds} s")
    else
        summary+=("FAIL  $name  ${seconds} s  (exit $status; log: $log_dir/$name.log)")
        failed=$((failed + 1))
        tail -n 20 "$log_dir/$name.log"
    fi
}

"$PYTHON" - <<'PY' >"$log_dir/device.txt" 2>&1
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
try:
    import cupy
    print(f"cupy {cupy.__version__}")
except ImportError:
    print("cupy: not installed (the CuPy tests and benchmark rows are skipped)")
PY
cat "$log_dir/device.txt"

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
if [ "$device" = cuda ]; then
    step tests_gpu "$PYTHON" -m pytest -q -m gpu tests/ -p no:cacheprovider
    step bench_splatting "$PYTHON" benchmarks/bench_splatting.py --repeats 3
else
    summary+=("SKIP  tests_gpu  (device $device)" "SKIP  bench_splatting  (device $device)")
fi

# Tiny data for the training steps: 4 synthetic clips prepared like real videos, and photos.
step make_data "$PYTHON" - "$work" <<'PY'
import sys
from pathlib import Path

from PIL import Image

from data.config import MotionConfig
from data.prepare import PrepareSettings, prepare
from data.synthetic import write_synthetic_dataset
from tests.test_prepare import textured_photo  # the photos the test suite trains on

work = Path(sys.argv[1])
config = MotionConfig(num_frames=20, fps=10.0, num_freqs=4, width=64, height=48)
photos = [textured_photo(seed) for seed in range(4)]
(work / "photos").mkdir(exist_ok=True)
for i, photo in enumerate(photos):
    Image.fromarray(photo).save(work / "photos" / f"photo{i}.png")
write_synthetic_dataset(photos, work / "videos", clips_per_photo=1, seed=3, config=config)
prepare(work / "videos", work / "prepared", PrepareSettings(config=config, val_fraction=0.25),
        progress=False)
PY

common=(--mixed_precision bf16 --max_train_steps 1 --checkpointing_steps 1 --validation_steps 1
        --report_to none --train_batch_size 2 --lr_warmup_steps 0 --use_ema)
[ "$device" = cpu ] && export CUDA_VISIBLE_DEVICES=""
step train_vae "$PYTHON" train_vae.py --train_data_dir "$work/prepared" --output_dir "$work/vae" \
    --resolution 32 --base_channels 8 --downsample_factor 4 "${common[@]}"
step train_unet "$PYTHON" train_unet.py --train_data_dir "$work/prepared" --output_dir "$work/unet" \
    --codec resample:8 --block_out_channels 8 16 --layers_per_block 1 --norm_num_groups 8 \
    --attention_head_dim 8 "${common[@]}"
step train_frame_synthesis "$PYTHON" train_frame_synthesis.py --photos "$work/photos" \
    --output_dir "$work/renderer" --frame_size 64x48 --resolution 32 --block_out_channels 4,6,8 \
    --frames_per_photo 2 --num_validation_images 2 "${common[@]}"
unset CUDA_VISIBLE_DEVICES
# The U-Net just trained is a pipeline folder too: sample.py loads it.
step sample_trained "$PYTHON" sample.py --model "$work/unet" --image data/examples/butterfly.jpg \
    --output "$work/samples_trained" --renderer softsplat --num_frames 8 \
    --num_inference_steps 2 --device "$device"
short=()
[ "$device" = cpu ] && short=(--num_frames 8 --num_inference_steps 2)  # the script check only
step sample_default "$PYTHON" sample.py --model weights/default --image data/examples/butterfly.jpg \
    --output "$work/samples" --device "$device" "${short[@]}"

echo
echo "gpu_check summary (device $device; logs in $log_dir):"
head -n 2 "$log_dir/device.txt" | sed 's/^/  /'
for line in "${summary[@]}"; do echo "  $line"; done
if [ -s "$log_dir/bench_splatting.log" ]; then  # its tables, without progress noise
    grep -v "^\s*$" "$log_dir/bench_splatting.log" | tail -n 25 | sed 's/^/  bench| /'
fi
total=${#summary[@]}
echo "gpu_check: $((total - failed)) passed or skipped, $failed failed"
[ $failed -eq 0 ]
