"""Training: feature cache, head fitting, the trainer loop, checkpoints and run directories,
and a run's steps (pipeline.py) from reading the data to the trained model (model.py).

The names below are imported when first read (_lazy.py): `TrainConfig` and its schema are
what the command line's `--help` needs, and they need no torch."""
from .._lazy import attach

__getattr__, __dir__ = attach(__name__, {
    "TrainConfig": "config", "FeatureCache": "features", "FeatureExtractor": "features",
    "Split": "loop", "Trainer": "loop", "TrainedModel": "model", "build_model": "model",
    "preprocess_for": "model", "resolve_backbone": "model", "fit_run": "pipeline",
    "RunWriter": "rundir", "read_run": "rundir"})

__all__ = ["TrainConfig", "FeatureCache", "FeatureExtractor", "Split", "Trainer", "RunWriter",
           "read_run", "TrainedModel", "build_model", "preprocess_for", "resolve_backbone",
           "fit_run"]
