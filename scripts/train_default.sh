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
#    examples (data/examples) are left out. Still scenes are kept (--min_distinct_fraction 0).
#    Rounds 1-2 used the teacher of before issue 15 (--legacy_teacher: the data they saw,
#    bit for bit; the shipped U-Net is three quarters of round 2's).
python scripts/make_default_data.py --photos "$DATA/photos/permissive" --skimage \
    --output_dir "$OUT/videos" --clips_per_photo 6 --seed 1 --legacy_teacher
python prepare_data.py --videos "$OUT/videos" --output_dir "$OUT/prepared" --num_workers 1 \
    --val_fraction 0.1 --min_distinct_fraction 0 --no_progress

# 2a. Motion U-Net, stage 1 (2-D, one frequency slice per volume), on the resampling codec
#     (it beats the CPU-trained VAE: docs/VAE.md).
UNET="--block_out_channels 32 64 128 --layers_per_block 1 --attention_head_dim 32"
[ -d "$OUT/unet_stage1/unet" ] || python train_unet.py --train_data_dir "$OUT/prepared" --codec resample:8 \
    --output_dir "$OUT/unet_stage1" --stage 1 $UNET --train_batch_size 16 \
    --learning_rate 3e-4 --lr_warmup_steps 50 --max_train_steps 901 \
    --random_flip --use_ema --ema_decay 0.995 --checkpointing_steps 100 \
    --checkpoints_total_limit 2 --validation_steps 200 --seed 0 --resume_from_checkpoint latest
# 2b. Motion data, round 2: the same photos plus tree.avi's and bikes.mp4's first frames,
#     each with 13 augmented copies (crop, hue rotation, saturation/value jitter), one
#     synthetic clip each: 280 clips in which textured regions of every colour turn green
#     (and sway) or stop being green (and stay still).
python scripts/make_default_data.py --photos "$DATA/photos/permissive" --skimage \
    --video_frames "$DATA/videos/tree.avi" "$DATA/videos/bikes.mp4" --variants_per_photo 14 \
    --output_dir "$OUT/videos_v2" --clips_per_photo 1 --seed 2 --legacy_teacher
python prepare_data.py --videos "$OUT/videos_v2" --output_dir "$OUT/prepared_v2" --num_workers 1 \
    --val_fraction 0.05 --min_distinct_fraction 0 --no_progress

# 2c. Stage 1 goes on from 2a on the round-2 data, then stage 2 adds frequency attention.
[ -d "$OUT/unet_stage1_v2/unet" ] || python train_unet.py --train_data_dir "$OUT/prepared_v2" \
    --codec resample:8 --output_dir "$OUT/unet_stage1_v2" --stage 1 \
    --pretrained_unet "$OUT/unet_stage1" --train_batch_size 16 --learning_rate 2e-4 \
    --lr_warmup_steps 50 --max_train_steps 2200 --random_flip --use_ema --ema_decay 0.995 \
    --checkpointing_steps 100 --checkpoints_total_limit 2 --validation_steps 500 --seed 0 \
    --resume_from_checkpoint latest
[ -d "$OUT/unet_stage2/unet" ] || python train_unet.py --train_data_dir "$OUT/prepared_v2" \
    --codec "$OUT/unet_stage1_v2/codec" --output_dir "$OUT/unet_stage2" --stage 2 \
    --pretrained_unet "$OUT/unet_stage1_v2" --train_batch_size 2 --learning_rate 1e-4 \
    --lr_warmup_steps 20 --max_train_steps 1000 --random_flip --use_ema --ema_decay 0.995 \
    --checkpointing_steps 100 --checkpoints_total_limit 2 --validation_steps 800 --seed 0 \
    --resume_from_checkpoint latest

# 2d. Issue 15: round-3 data: the calibrated teacher (region cues of any colour; amplitude
#     log-uniform 0.6-3.0 px, vegetation modes falling as f^-1.5), every permissive photo
#     (the opencv-doc photos and frame pairs, 10 scikit-image photos, tree.avi's and
#     bikes.mp4's first frames; the examples and scikit-learn's china/flower are held out),
#     14 copies each. Rounds 3-10 trained on it; the shipped U-Net's motion_gain is measured
#     on it (step 4: the teacher whose amplitudes follow real footage). The cues as they
#     were then (--cues cues-round3: the clips rounds 3-10 saw, byte for byte; the cues
#     improved after, on photos of lakes and mountains).
python scripts/make_default_data.py --photos "$DATA/photos/permissive" \
    "$DATA/pairs/basketball1.png" "$DATA/pairs/rubberwhale1.png" "$DATA/pairs/leuvenB.jpg" \
    --skimage --video_frames "$DATA/videos/tree.avi" "$DATA/videos/bikes.mp4" \
    --variants_per_photo 14 --output_dir "$OUT/videos_v3" --clips_per_photo 1 --seed 3 \
    --cues cues-round3
python prepare_data.py --videos "$OUT/videos_v3" --output_dir "$OUT/prepared_v3" \
    --num_workers 1 --val_fraction 0.05 --min_distinct_fraction 0 --no_progress
# 2e. Issue 15, round 11: stage 2 goes on from 2c with mask conditioning (the mask channels
#     start at zero weights and learn 10x faster), on the round-2 clips that move (2b's data:
#     the data 2c saw), each clip's own motion mask given 90 % of the time: 30 % of those cut
#     by a random brush stroke, half of the rest widened by a random still region ("may
#     move"). Round 6's recipe for its run f, step count included (1802: what 30 min on one
#     core allowed f on the round-3 data). Rounds 6-10 ran it three times on 2d's data:
#     docs/MODEL_CARD.md.
[ -d "$OUT/unet_mask/unet" ] || python train_unet.py --train_data_dir "$OUT/prepared_v2" \
    --codec resample:8 --output_dir "$OUT/unet_mask" --stage 2 \
    --pretrained_unet "$OUT/unet_stage2" --mask_conditioning --min_moving_fraction 0.05 \
    --mask_probability 0.9 --mask_augmentation 0.3 --mask_lr_scale 10 --train_batch_size 2 \
    --learning_rate 1e-4 --lr_warmup_steps 20 --random_flip --use_ema --ema_decay 0.995 \
    --checkpointing_steps 100 --checkpoints_total_limit 2 --validation_steps 600 \
    --resume_from_checkpoint latest --seed 2 --mask_slack 0.5 --max_train_steps 1802
# 2f. Issue 15, round 12 (shipped): that U-Net moved three quarters of the way back to the
#     U-Net it was fine-tuned from (2c's stage 2: its sense of where a photo moves, kept;
#     the gain is measured again at step 4). Rounds 3-12 and the rules that chose them:
#     docs/MODEL_CARD.md.
python scripts/average_unets.py --inputs "$OUT/unet_mask" --base "$OUT/unet_stage2" \
    --base_weight 0.75 --output_dir "$OUT/unet_wise" --overwrite
MOTION_UNET="$OUT/unet_wise"

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
# 3b. Fine-tune on a new schedule (EMA), then once more with the training photos animated by
#     synthetic motion added (exact flow; their targets are softmax-splatted photos).
[ -f "$OUT/renderer_ft/config.json" ] || NUMBA_NUM_THREADS=1 python train_frame_synthesis.py \
    --videos "$OUT/renderer_videos" --pairs "$DATA/pairs" --max_gap 12 --window_stride 2 \
    --cache_dir "$OUT/renderer_flow_cache" --output_dir "$OUT/renderer_ft" --resolution 128 \
    --train_batch_size 8 --max_train_steps 3000 --learning_rate 2e-4 --lr_warmup_steps 50 \
    --pretrained_model_name_or_path "$OUT/renderer" --use_ema --ema_decay 0.998 \
    --validation_steps 1000 --checkpointing_steps 250 --checkpoints_total_limit 2 \
    --resume_from_checkpoint latest
mkdir -p "$OUT/renderer_photos"
for photo in "$DATA"/photos/permissive/*.jpg "$OUT"/skimage_photos/*.png; do
    [ -e "data/examples/$(basename "$photo")" ] || ln -sf "$(readlink -f "$photo")" "$OUT/renderer_photos/"
done
[ -f "$OUT/renderer_ft2/config.json" ] || NUMBA_NUM_THREADS=1 python train_frame_synthesis.py \
    --videos "$OUT/renderer_videos" --pairs "$DATA/pairs" --photos "$OUT/renderer_photos" \
    --frames_per_photo 8 --max_gap 12 --window_stride 2 \
    --cache_dir "$OUT/renderer_flow_cache" --output_dir "$OUT/renderer_ft2" --resolution 128 \
    --train_batch_size 8 --max_train_steps 1500 --learning_rate 1e-4 --lr_warmup_steps 20 \
    --pretrained_model_name_or_path "$OUT/renderer_ft" --use_ema --ema_decay 0.998 \
    --validation_steps 1500 --checkpointing_steps 250 --checkpoints_total_limit 2 \
    --resume_from_checkpoint latest

# 3c. Issue 16: the fallback gate towards average splatting (added nearly shut) and the
#     large-motion data: bikes.mp4 frames 0-29 and 76-186 (frames 30-75, the largest
#     motion, are left out of this stage), long gaps of 16-32 frames, both play directions,
#     the real pairs and layered compositions of the permissive photos (sub-pixel to
#     ~150 px of motion, disocclusions; docs/FRAME_SYNTHESIS.md gives the distribution).
#     Run 1 trains the network with the gate at the base rate (it stays shut), run 2 lets
#     the gate learn at 400x the rate.
mkdir -p "$OUT/renderer_videos_lm"
python - "$DATA" "$OUT" <<'PY'
import sys
from pathlib import Path
from data.video import read_video, write_mp4
data, out = Path(sys.argv[1]), Path(sys.argv[2])
video = None
for first, last in ((0, 29), (76, 186)):
    target = out / "renderer_videos_lm" / f"bikes_frames{first:03d}-{last:03d}.mp4"
    if not target.exists():
        if video is None:
            video = read_video(data / "videos" / "bikes.mp4", drop_duplicates=False)
        write_mp4(video.frames[first : last + 1], target, 25, quality=10)
PY
LARGE_MOTION=(--videos "$OUT/renderer_videos_lm" --pairs "$DATA/pairs" --layered "$DATA/photos/permissive"
    --max_gap 12 --window_stride 2 --long_gaps 16,24,32 --both_directions
    --cache_dir "$OUT/renderer_flow_cache" --resolution 128 --train_batch_size 8
    --lr_warmup_steps 20 --use_ema --checkpointing_steps 100 --checkpoints_total_limit 2
    --resume_from_checkpoint latest)
[ -f "$OUT/renderer_gate/config.json" ] || NUMBA_NUM_THREADS=1 python train_frame_synthesis.py \
    "${LARGE_MOTION[@]}" --output_dir "$OUT/renderer_gate" \
    --pretrained_model_name_or_path "$OUT/renderer_ft2" --fallback_gate --gate_lr_scale 1 \
    --max_train_steps 1400 --learning_rate 1e-4 --ema_decay 0.998 --validation_steps 700
[ -f "$OUT/renderer_gate2/config.json" ] || NUMBA_NUM_THREADS=1 python train_frame_synthesis.py \
    "${LARGE_MOTION[@]}" --output_dir "$OUT/renderer_gate2" \
    --pretrained_model_name_or_path "$OUT/renderer_gate" --fallback_gate --gate_lr_scale 400 \
    --max_train_steps 700 --learning_rate 5e-5 --ema_decay 0.995 --seed 1 --validation_steps 700

# 4. Assemble weights/default: the motion pipeline (codec + U-Net + scheduler + config +
#    normalisation) and the renderer in weights/default/renderer. Every sample is blurred by
#    4 px of the model's frame (its fields are rougher than its data at the scale of one to
#    four latent cells; docs/SAMPLING.md "Smooth motion" says how 4 was chosen).
python scripts/assemble_default.py --unet_output "$MOTION_UNET" --renderer "$OUT/renderer_gate2" \
    --output_dir weights/default --overwrite --motion_smoothing 4
# The U-Net's samples (so blurred) are weaker than its data: measure the correction on every
# training clip that moves (148; never on held-out photos) and store it as the pipeline's
# motion_gain (docs/SAMPLING.md).
python scripts/calibrate_motion_gain.py --model weights/default \
    --train_data_dir "$OUT/prepared_v3" --write
