"""Everything that imports torch: the one training loop, the one inference loop, checkpoints,
backbones, models (nn.Modules + registry) and tasks."""
