"""Networks and pipelines (diffusers ModelMixin/ConfigMixin, DiffusionPipeline)."""

# Schedulers a MotionPipeline samples with, by short name (``MotionPipeline.set_scheduler``,
# sample.py and evaluate.py ``--scheduler``); here, away from torch, so that command lines
# can list them without importing it. DDIM is the default, DPM-Solver++ the few-step one.
SCHEDULERS = ("ddim", "dpm", "ddpm", "euler")
