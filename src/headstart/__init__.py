"""headstart: transfer learning for small labelled datasets, offline, on a CPU."""
import os as _os

# OpenMP threads that spin while waiting cost 6-10x on a shared 2-core machine (measured: one
# scratch epoch 38 s vs 3.7 s); waiting passively costs little when the cores are idle. Only a
# default: set OMP_WAIT_POLICY yourself to override. Effective when headstart loads torch.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .version import __version__  # noqa: E402

from .exceptions import (ConfigError, DamagedFileError, DataError, HeadstartError,  # noqa: E402
                         ImageReadError, RunDirError, RunLockedError, UnknownBackboneError,
                         WeightsError, WeightsMismatchError)
from ._lazy import attach  # noqa: E402

# The rest is imported when first read (_lazy.py): the backbones and modalities need torch
# (2-3 s idle, far more on a loaded machine) that `import headstart` and `--help` do not; the
# estimator's base classes are scikit-learn's, another second.
__getattr__, __dir__ = attach(__name__, {
    "create_backbone": "backbones", "list_backbones": "backbones",
    "register_backbone": "backbones", "load_dataset": "modalities",
    "TrainConfig": "training.config", "TransferClassifier": "classifier",
    "NotFittedError": "classifier"})

__all__ = ["__version__", "TransferClassifier", "NotFittedError", "TrainConfig",
           "create_backbone", "list_backbones", "register_backbone", "load_dataset",
           "HeadstartError", "DataError", "ImageReadError", "ConfigError", "RunDirError",
           "RunLockedError", "DamagedFileError", "UnknownBackboneError", "WeightsError",
           "WeightsMismatchError"]

