"""Networks and pipelines (diffusers ModelMixin/ConfigMixin, DiffusionPipeline)."""
