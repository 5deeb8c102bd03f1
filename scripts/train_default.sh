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
    --learning_rate 3e-4 --lr_warmup_steps 50 --max_train_steps 100000 --max_train_seconds 1800 \
    --random_flip --use_ema --ema_decay 0.995 --checkpointing_steps 100 \
    --checkpoints_total_limit 2 --validation_steps 200 --seed 0 --resume_from_checkpoint latest
[ -d "$OUT/unet_stage2/unet" ] || python train_unet.py --train_data_dir "$OUT/prepared" --codec "$OUT/unet_stage1/codec" \
    --output_dir "$OUT/unet_stage2" --stage 2 --pretrained_unet "$OUT/unet_stage1" $UNET \
    --train_batch_size 2 --learning_rate 1e-4 --lr_warmup_steps 20 --max_train_steps 100000 \
    --max_train_seconds 2400 --random_flip --use_ema --ema_decay 0.995 \
    --checkpointing_steps 50 --checkpoints_total_limit 2 --validation_steps 100 --seed 0 \
    --resume_from_checkpoint latest

# 3. Renderer: see docs/FRAME_SYNTHESIS.md for the command; it writes $OUT/renderer.
RENDERER_COMMAND_PLACEHOLDER

# 4. Assemble weights/default: the motion pipeline (codec + U-Net + scheduler + config +
#    normalisation) and the renderer in weights/default/renderer.
python scripts/assemble_default.py --unet_output "$OUT/unet_stage2" --renderer "$OUT/renderer" \
    --out weights/default
