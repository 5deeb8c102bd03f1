"""Networks and pipelines (diffusers ModelMixin/ConfigMixin, DiffusionPipeline)."""

import os

# diffusers' from_pretrained imports onnxruntime when it is installed, and its official
# builds send telemetry (a DNS lookup of Microsoft's events host was seen with strace).
# Everything here runs offline: off, for sample.py, the demo and Python users alike.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# Schedulers a MotionPipeline samples with, by short name (``MotionPipeline.set_scheduler``,
# sample.py and evaluate.py ``--scheduler``); here, away from torch, so that command lines
# can list them without importing it. DDIM is the default, DPM-Solver++ the few-step one.
SCHEDULERS = ("ddim", "dpm", "ddpm", "euler")
