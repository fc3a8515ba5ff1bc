"""Training: feature cache, head fitting, the trainer loop, checkpoints and run directories."""
from .config import TrainConfig
from .features import FeatureCache, FeatureExtractor
from .loop import Split, Trainer
from .rundir import RunWriter, read_run

__all__ = ["TrainConfig", "FeatureCache", "FeatureExtractor", "Split", "Trainer", "RunWriter",
           "read_run"]
