"""headstart: transfer learning for small labelled datasets, offline, on a CPU."""
import os as _os

# OpenMP threads that spin while waiting cost 6-10x on a shared 2-core machine (measured: one
# scratch epoch 38 s vs 3.7 s); waiting passively costs little when the cores are idle. Only a
# default: set OMP_WAIT_POLICY yourself to override. Effective when headstart loads torch.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from .backbones import create_backbone, list_backbones, register_backbone  # noqa: E402
from .classifier import TransferClassifier  # noqa: E402
from .exceptions import (ConfigError, DamagedFileError, DataError, HeadstartError,  # noqa: E402
                         ImageReadError, RunDirError, RunLockedError, UnknownBackboneError,
                         WeightsError, WeightsMismatchError)
from .training.config import TrainConfig  # noqa: E402

__all__ = ["__version__", "TransferClassifier", "TrainConfig", "create_backbone",
           "list_backbones", "register_backbone", "HeadstartError", "DataError",
           "ImageReadError", "ConfigError", "RunDirError", "RunLockedError", "DamagedFileError",
           "UnknownBackboneError", "WeightsError", "WeightsMismatchError"]
