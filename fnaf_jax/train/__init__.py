"""Training: clean and FNAF-robust steps, the resumable loop, training checkpoints."""
