#!/usr/bin/env bash
# Rebuild the shipped default weights (weights/default) from scratch on the CPU.
#
#   bash scripts/train_default.sh [SHARED_DATA_DIR]      (default: ../shared/data)
#
# Every step is one of the project's own commands; docs/MODEL_CARD.md gives the data, the
# wall time of each step on 2 CPU cores and the measured results. Steps resume: run it
# again after an interruption: finished steps are skipped, prepare_data resumes from its
# outputs and an interrupted training resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
OUT=${OUT:-outputs/default_build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # one thread per process beat two on 2 shared cores

# 1. Motion training data: the permissive photos + scikit-image's photos, animated with
#    synthetic motion (6 clips each), then prepared like real footage. The bundled
#    examples (data/examples) are left out. Still scenes are kept (--min-distinct-fraction 0).
python scripts/make_default_data.py --photos "$DATA/photos/permissive" --skimage \
    --out "$OUT/videos" --clips_per_photo 6 --seed 1
python prepare_data.py --videos "$OUT/videos" --out "$OUT/prepared" --num-workers 1 \
    --val-fraction 0.1 --min-distinct-fraction 0 --no-progress

# 2. Motion U-Net, stage 1 (2-D, one frequency slice per volume) then stage 2 (+ frequency
#    attention), on the resampling codec (it beats the CPU-trained VAE: docs/VAE.md).
UNET="--block_out_channels 32 64 128 --layers_per_block 1 --attention_head_dim 32"
[ -d "$OUT/unet_stage1/unet" ] || python train_unet.py --train_data_dir "$OUT/prepared" --codec resample:8 \
    --output_dir "$OUT/unet_stage1" --stage 1 $UNET --train_batch_size 16 \
    --learning_rate 3e-4 --lr_warmup_steps 50 --max_train_steps 901 \
    --random_flip --use_ema --ema_decay 0.995 --checkpointing_steps 100 \
    --checkpoints_total_limit 2 --validation_steps 200 --seed 0 --resume_from_checkpoint latest
[ -d "$OUT/unet_stage2/unet" ] || python train_unet.py --train_data_dir "$OUT/prepared" --codec "$OUT/unet_stage1/codec" \
    --output_dir "$OUT/unet_stage2" --stage 2 --pretrained_unet "$OUT/unet_stage1" $UNET \
    --train_batch_size 2 --learning_rate 1e-4 --lr_warmup_steps 20 --max_train_steps 1448 \
    --random_flip --use_ema --ema_decay 0.995 \
    --checkpointing_steps 50 --checkpoints_total_limit 2 --validation_steps 150 --seed 0 \
    --resume_from_checkpoint latest

# 3. Renderer: real video (bikes.mp4 frames 0-186; frames 187-241 and tree.avi are held out
#    for evaluation) and the real frame pairs; docs/FRAME_SYNTHESIS.md explains the choices.
mkdir -p "$OUT/renderer_videos"
python - "$DATA" "$OUT" <<'PY'
import sys
from pathlib import Path
from data.video import read_video, write_mp4
data, out = Path(sys.argv[1]), Path(sys.argv[2])
target = out / "renderer_videos" / "bikes_frames000-186.mp4"
if not target.exists():
    video = read_video(data / "videos" / "bikes.mp4", drop_duplicates=False)
    write_mp4(video.frames[:187], target, 25, quality=10)
PY
[ -f "$OUT/renderer/config.json" ] || NUMBA_NUM_THREADS=1 python train_frame_synthesis.py \
    --videos "$OUT/renderer_videos" --pairs "$DATA/pairs" --max_gap 12 --window_stride 2 \
    --cache_dir "$OUT/renderer_flow_cache" --output_dir "$OUT/renderer" --resolution 128 \
    --train_batch_size 8 --max_train_steps 1200 --learning_rate 5e-4 --lr_warmup_steps 50 \
    --block_out_channels 16,24,32 --grid_columns 2 --validation_steps 300 \
    --checkpointing_steps 100 --checkpoints_total_limit 2 --resume_from_checkpoint latest

# 4. Assemble weights/default: the motion pipeline (codec + U-Net + scheduler + config +
#    normalisation) and the renderer in weights/default/renderer.
python scripts/assemble_default.py --unet_output "$OUT/unet_stage2" --renderer "$OUT/renderer" \
    --out weights/default
