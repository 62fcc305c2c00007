"""What a training loop optimises: one task per file (loss + evaluate on a loader)."""
