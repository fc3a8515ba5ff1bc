"""headstart: transfer learning for small labelled datasets, offline, on a CPU."""
__version__ = "0.1.0"

from .backbones import create_backbone, list_backbones, register_backbone  # noqa: E402
from .classifier import TransferClassifier  # noqa: E402
from .exceptions import (ConfigError, DataError, HeadstartError, ImageReadError,  # noqa: E402
                         RunDirError, UnknownBackboneError, WeightsError, WeightsMismatchError)
from .training.config import TrainConfig  # noqa: E402

__all__ = ["__version__", "TransferClassifier", "TrainConfig", "create_backbone",
           "list_backbones", "register_backbone", "HeadstartError", "DataError",
           "ImageReadError", "ConfigError", "RunDirError", "UnknownBackboneError", "WeightsError",
           "WeightsMismatchError"]
