"""Real inputs for an export's checks: the run's own validation examples (re-split from its
data exactly as training split it), else the shipped animal-mnist / BBC News hold-outs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .. import modalities
from ..data.datasets import stratified_split
from ..modalities import load_dataset
from ..exceptions import HeadstartError


@dataclass
class Samples:
    sources: list  # image paths or arrays, or texts
    labels: list[str] | None  # the run's class names, when known
    description: str

    def __len__(self) -> int:
        return len(self.sources)


def _spread(labels: list[str], idx: list[int], limit: int | None) -> list[int]:
    """Up to `limit` of idx, taken round-robin over the classes (all of them with None)."""
    if limit is None or limit >= len(idx):
        return list(idx)
    by_class: dict[str, list[int]] = {}
    for i in idx:
        by_class.setdefault(labels[i], []).append(i)
    queues = [by_class[c] for c in sorted(by_class)]
    out: list[int] = []
    while len(out) < limit:
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


def run_examples(trained, *, limit: int | None, split: str = "validation") -> Samples | None:
    """The run's validation examples (its training examples with --val-fraction 0, or with
    split="training"), or None when the run's data cannot be read any more."""
    run = getattr(trained, "run_dir", None)
    if run is None:
        return None
    try:
        stored = yaml.safe_load((Path(run) / "config.yaml").read_text()) or {}
        data = stored.get("data")
        if not data or not Path(data).exists():
            return None
        cfg = trained.config
        ds = load_dataset(data, skip_bad=cfg.skip_bad, min_classes=1, modality=trained.modality,
                          text_options=cfg.text_options())
    except (HeadstartError, OSError, yaml.YAMLError):
        return None
    train, val = stratified_split(ds.labels, cfg.val_fraction, cfg.seed)
    which, idx = ("validation", val) if val and split == "validation" else ("training", train)
    idx = [i for i in idx if ds.labels[i] in trained.classes]
    if not idx:
        return None
    pick = _spread(ds.labels, idx, limit)
    return Samples([ds.sources[i] for i in pick], [ds.labels[i] for i in pick],
                   f"{len(pick)} {which} examples of the run ({data})")


def shipped_examples(modality, *, limit: int, classes: list[str]) -> Samples:
    """Hold-out examples of the shipped data of the modality (animal-mnist or BBC News)."""
    sources, labels, what = modalities.get(modality).shipped_holdout()
    pick = _spread(labels, list(range(len(labels))), limit)
    names = [labels[i] for i in pick]
    known = set(classes)
    return Samples([sources[i] for i in pick], names if all(n in known for n in names) else None,
                   f"{len(pick)} shipped {what} hold-out examples")


def parity_samples(trained, *, limit: int) -> Samples:
    """Real inputs to compare the export with PyTorch on, and what the modality adds (texts:
    long articles, to check the pooling over windows)."""
    found = run_examples(trained, limit=limit) or shipped_examples(
        trained.modality, limit=limit, classes=trained.classes)
    extra, what = trained.modality.parity_extras(trained.preprocess)
    if extra:
        found = Samples(found.sources + extra, None, f"{found.description} and {what}")
    return found


def heldout_samples(trained, test=None, *, limit: int = 1000) -> Samples | None:
    """Labelled examples the saved model never learned from, to measure accuracy on: `test`
    (data in the run's form); else the run's validation examples, unless the saved model was
    refitted on them; else the shipped hold-out when the run's classes are its classes; else
    the validation examples, said to be seen. None when there are none of these."""
    cfg = trained.config
    if test is not None:
        ds = load_dataset(test, skip_bad=True, min_classes=1, modality=trained.modality,
                          text_options=cfg.text_options())
        idx = _spread(ds.labels, [i for i, y in enumerate(ds.labels) if y in trained.classes],
                      limit)
        return Samples([ds.sources[i] for i in idx], [ds.labels[i] for i in idx],
                       f"{len(idx)} labelled examples of {test}")
    metrics = trained.metrics or {}
    refitted = bool(metrics.get("head_refit_on") or metrics.get("refit_full"))
    val = run_examples(trained, limit=limit)
    if val is not None and "validation" in val.description and not refitted:
        return val
    try:
        shipped = shipped_examples(trained.modality, limit=limit, classes=trained.classes)
    except HeadstartError:
        shipped = None
    if shipped is not None and shipped.labels is not None:
        return shipped
    if val is not None and "validation" in val.description:
        val.description += " (not held out: the saved model was refitted on them too)"
        return val
    return None
