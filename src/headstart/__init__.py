"""headstart: transfer learning for small labelled datasets, offline, on a CPU."""
import os as _os

# OpenMP threads that spin while waiting cost 6-10x on a shared 2-core machine (measured: one
# scratch epoch 38 s vs 3.7 s); waiting passively costs little when the cores are idle. Only a
# default: set OMP_WAIT_POLICY yourself to override. Effective when headstart loads torch.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .version import __version__  # noqa: E402

from .backbones import create_backbone, list_backbones, register_backbone  # noqa: E402
from .exceptions import (ConfigError, DamagedFileError, DataError, HeadstartError,  # noqa: E402
                         ImageReadError, RunDirError, RunLockedError, UnknownBackboneError,
                         WeightsError, WeightsMismatchError)
from .modalities import load_dataset  # noqa: E402
from .training.config import TrainConfig  # noqa: E402

__all__ = ["__version__", "TransferClassifier", "NotFittedError", "TrainConfig",
           "create_backbone", "list_backbones", "register_backbone", "load_dataset",
           "HeadstartError", "DataError", "ImageReadError", "ConfigError", "RunDirError",
           "RunLockedError", "DamagedFileError", "UnknownBackboneError", "WeightsError",
           "WeightsMismatchError"]


def __getattr__(name: str):
    if name in ("TransferClassifier", "NotFittedError"):
        # deferred on purpose: the estimator's base classes are scikit-learn's, whose import
        # costs about a second that the command line never needs
        from . import classifier
        return getattr(classifier, name)
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")
