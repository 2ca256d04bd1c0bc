"""The headless core: model loading, checkpoints, blending, generation, training and
metrics. Nothing here imports Qt; the GUI and the CLI are thin layers over it."""
