"""The library's verbs, used by the CLI and by TransferClassifier: train, load, evaluate,
predict, and the source network's own predictions (ImageNet top-k). The steps of a training
run are in training/pipeline.py, the model it builds in training/model.py."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import modalities, threads
from .backbones import create_backbone
from .data import duplicates
from .evaluation import classification_report, plot_history
from .evaluation.zero_shot import imagenet_names
from .exceptions import DataError
from .export.runtime import onnx_logits
from .training import FeatureCache, FeatureExtractor, RunWriter, TrainConfig, read_run
from .training import distributed as dist
from .training.extract import extract_features
from .training.model import TrainedModel, build_model
from .training.pipeline import fit_run, report_skipped, upgrade_metrics
from .training.predict import predict_logits, softmax
from .training.rundir import TRAINED_ON, load_run_state, read_trained_on, run_config, run_writer
from .transferability.recommend import recommend
from .version import __version__

__all__ = ["TrainConfig", "TrainedModel", "train", "load", "save_run", "evaluate", "predict",
           "predict_probs", "source_predict", "report_skipped"]


def train(data, out: str | Path | None = None, *, labels=None, config: TrainConfig | None = None,
          overwrite: bool = False, restart: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainedModel:
    """Train a classifier on `data` (see modalities.load_dataset) and, with `out`, write its
    run directory. The run is locked by this process until it is committed or training
    fails."""
    with run_writer(out, data, overwrite=overwrite, log=log) as writer:
        result, _ = fit_run(data, writer, labels=labels, config=config, restart=restart,
                            progress=progress, log=log,
                            choose_backbone=lambda cfg: _auto_backbone(data, labels, cfg,
                                                                       progress, log))
        if writer is not None:
            result.run_dir = save_run(result, writer, overwrite=overwrite)
    return result


def _auto_backbone(data, labels, cfg: TrainConfig, progress: bool, log) -> dict:
    """`--backbone auto`: rank the candidates on the data, take the recommendation (backbone,
    weights, strategy, depth) into cfg, and return it to be recorded in the run."""
    rec = recommend(data, labels=labels, log=log, truncate=cfg.truncate, progress=progress,
                    text_options=cfg.text_options(), skip_bad=cfg.skip_bad)
    for key, value in rec.train_options().items():
        setattr(cfg, key, value)
    return {"candidate": rec.candidate, "by": rec.by, "reason": rec.reason,
            **rec.train_options()}


def save_run(result: TrainedModel, writer: RunWriter, *, overwrite: bool = False,
             extra: dict | None = None) -> Path:
    """Write the trained model into the writer's run and commit it (`extra`: more settings for
    a run that was trained in memory, such as an estimator's parameters)."""
    if not writer.partial.exists():
        writer.open({"headstart_version": __version__, **result.config.to_dict(),
                     **(extra or {})}, restart=True)
    job = result.metrics.get("distributed")
    if job:  # the job's shape and its batch and rate rule, beside the settings
        writer.record_job({"distributed": {k: job[k] for k in (
            "world", "nodes", "backend", "per_process_batch", "effective_batch", "lr_rule",
            "batchnorm") if k in job}})
    writer.write_json("labels.json", result.label_values or result.classes)
    writer.write_model(result.model.state_dict())
    writer.write_json("metrics.json", result.metrics)
    if result.trained_on:
        writer.write_json(TRAINED_ON, result.trained_on)
    writer.write_history(result.history)
    plot_history(result.history, writer.partial / "history.png")
    return writer.commit(overwrite=overwrite)


def load(run: str | Path) -> TrainedModel:
    stored, values, state, metrics = read_run(run)
    classes = [str(v) for v in values]
    cfg = run_config(run, stored)
    cfg.weights = None  # the run's own weights replace the source weights
    model = build_model(cfg, len(classes), pretrained=False)
    load_run_state(run, model, state)
    model.eval()
    return TrainedModel(model, classes, cfg, upgrade_metrics(metrics), [], Path(run),
                        label_values=values, stored=stored, trained_on=read_trained_on(run))


def evaluate(trained: TrainedModel, data, *, labels=None, skip_bad: bool = False,
             progress: bool = True) -> tuple[dict, list[str]]:
    """Accuracy and per-class report of `trained` on labelled `data` (under torchrun each
    process extracts its block of the data; every process gets the whole report)."""
    dist.init_from_env()
    modalities.check_modality(data, labels, trained.modality, trained.run_dir or "the model")
    ds = modalities.load_dataset(data, labels, skip_bad=skip_bad, min_classes=1,
                                 modality=trained.modality,
                                 text_options=trained.config.text_options())
    unknown = sorted(set(ds.labels) - set(trained.classes))
    if unknown:
        raise DataError(f"{ds.root}: classes {', '.join(unknown)} are not among the run's "
                        f"classes ({', '.join(trained.classes)}); evaluate on the same classes")
    # a probe's backbone (a linear probe, or fine-tuning that kept mix 0) is the source's: its
    # cached features are valid and reused
    mix = (trained.metrics or {}).get("mix") or {}
    cached = trained.config.strategy == "linear_probe" or mix.get("alpha") == 0
    logits, kept, skipped = _logits(trained, ds, skip_bad=skip_bad, progress=progress,
                                    cache=cached)
    y = np.array([trained.classes.index(ds.labels[i]) for i in kept])
    report = classification_report(y, logits.argmax(1), trained.classes)
    report["ignored"] = ds.ignored_notes()
    if trained.trained_on:  # test examples that are copies of training ones (duplicates.py)
        names = ds.describe_sources()
        report["copies_of_training"] = duplicates.seen_in_training(
            [trained.modality.content_key(ds.sources[i]) for i in kept], set(trained.trained_on),
            [names[i] for i in kept], y == logits.argmax(1))
    return report, ds.skipped + skipped


def _logits(trained: TrainedModel, ds, *, skip_bad: bool = False, progress: bool = False,
            cache: bool = False):
    """(logits, kept indices, skipped): ONNX Runtime when the run has an export made from its
    current weights (`headstart export`), else the PyTorch model (with `cache`, reading and
    filling the feature cache)."""
    threads.apply()  # the process's thread policy (threads.py)
    # under torchrun the PyTorch path, whose extraction is sharded across the processes
    found = None if dist.active() else onnx_logits(trained, ds.sources, skip_bad=skip_bad,
                                                   progress=progress)
    if found is not None:
        return found
    logits, ex = predict_logits(trained.model, ds, trained.preprocess, flip=trained.config.flip,
                                progress=progress, skip_bad=skip_bad, return_kept=True,
                                cache=FeatureCache() if cache else None,
                                max_pixels=trained.config.max_pixels)
    return logits, ex.kept, ex.skipped


def predict_probs(trained: TrainedModel, inputs: list, *, progress: bool = False,
                  skipped: list | None = None) -> np.ndarray:
    """Class probabilities (n, classes) in the order of trained.classes. With a `skipped`
    list, unreadable inputs are skipped (their reasons appended to it, their rows NaN)."""
    ds = trained.modality.unlabelled(list(inputs), trained.run_dir or "the model")
    logits, kept, bad = _logits(trained, ds, skip_bad=skipped is not None, progress=progress)
    probs = np.full((len(ds), len(trained.classes)), np.nan, np.float64)
    probs[kept] = softmax(logits)
    if skipped is not None:
        skipped += bad
    return probs


def predict(trained: TrainedModel, inputs: list, *, top: int = 5, progress: bool = False,
            skipped: list | None = None) -> list[list[tuple[str, float]] | None]:
    """Top-k (class, probability) for each input (images or texts, as the run was trained on).
    With a `skipped` list, an unreadable input gets None and its reason goes to the list."""
    return [None if np.isnan(p).any() else _top(p, trained.classes, top)
            for p in predict_probs(trained, inputs, progress=progress, skipped=skipped)]


def predict_images(trained: TrainedModel, images: list, **kw):
    """Deprecated name of predict (it predicts texts too)."""
    return predict(trained, images, **kw)


def source_predict(inputs: list, *, backbone: str = "efficientnet_lite0", weights=None,
                   top: int = 5, skipped: list | None = None,
                   max_pixels: int = TrainConfig.max_pixels
                   ) -> list[list[tuple[str, float]] | None]:
    """The pre-trained network's own predictions (ImageNet top-k), as Keras' decode_predictions."""
    threads.apply()  # the process's thread policy (threads.py)
    model = create_backbone(backbone, weights=weights).eval()
    if getattr(model, "source_classifier_loaded", True) is False or \
            model.config.source_labels != "imagenet-1k":
        raise DataError(f"backbone '{backbone}' has no ImageNet classifier with these weights; "
                        "train a run and use `headstart predict --run RUN`")
    m = modalities.of(model)
    pre = m.preprocess(model.config, model.input_size)
    head = model.source_classifier()
    ds = m.unlabelled(list(inputs), f"backbone '{backbone}'")
    ex = extract_features(ds, FeatureExtractor(model), pre, progress=False,
                          skip_bad=skipped is not None, max_pixels=max_pixels)
    if skipped is not None:
        skipped += ex.skipped
    out: list = [None] * len(ds)
    if ex.kept:
        with torch.inference_mode():
            logits = head(torch.from_numpy(ex.features[:, 0])).numpy()
        names = imagenet_names()
        for i, p in zip(ex.kept, softmax(logits)):
            out[i] = _top(p, names, top)
    return out


def _top(p: np.ndarray, names: list[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-p)[:k]
    return [(names[i], float(p[i])) for i in order]
