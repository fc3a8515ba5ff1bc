"""The parity check of an export: the exported graph and the run's PyTorch model classify the
same real inputs, and their logits are compared."""
from __future__ import annotations

import numpy as np
import torch

from ..exceptions import ExportError
from ..training.predict import predict_logits
from .runtime import ExportedModel
from .samples import Samples


def check_parity(trained, exported: ExportedModel, samples: Samples, *,
                 tolerance: float) -> dict:
    """Logits of the export and of the run's PyTorch model (eager, the `predict` path) on the
    same real inputs."""
    sources = samples.sources
    ds = trained.modality.unlabelled(list(sources), trained.run_dir or "the model")
    ref, ex = predict_logits(trained.model, ds, trained.preprocess, flip=trained.config.flip,
                             engine="torch", progress=False, skip_bad=True, return_kept=True,
                             batch_size=16)
    got, kept, _ = exported.predict_logits([sources[i] for i in ex.kept], skip_bad=True,
                                           batch_size=16)
    if len(kept) != len(ex.kept) or not len(kept):
        raise ExportError(f"parity check: no readable inputs among {samples.description}")
    diff = float(np.abs(got - ref).max())
    multi = exported.inputs.windowed([sources[i] for i in ex.kept])
    return {"max_abs_logit_diff": diff, "tolerance": tolerance, "examples": len(kept),
            "top1_agree": int((got.argmax(1) == ref.argmax(1)).sum()),
            "inputs": samples.description, "multi_window_texts": multi,
            "against": "the run's PyTorch model (eager), as `headstart predict` runs it",
            "torch_version": torch.__version__}
