"""Fusion of modalities: cross-modal models trained on the branches' features
(:mod:`pipeline.fusion.cross_modal`) and late fusion of score matrices
(:mod:`pipeline.fusion.late`). Kept apart so late fusion runs without importing torch."""
