"""Training: feature cache, head fitting, the trainer loop, checkpoints and run directories,
and a run's steps (pipeline.py) from reading the data to the trained model (model.py)."""
from .config import TrainConfig
from .features import FeatureCache, FeatureExtractor
from .loop import Split, Trainer
from .model import TrainedModel, build_model, preprocess_for, resolve_backbone
from .pipeline import fit_run
from .rundir import RunWriter, read_run

__all__ = ["TrainConfig", "FeatureCache", "FeatureExtractor", "Split", "Trainer", "RunWriter",
           "read_run", "TrainedModel", "build_model", "preprocess_for", "resolve_backbone",
           "fit_run"]
