"""A training run, step by step: what `api.train` (and `pretrain`) do between reading the data and
writing the run directory.

    read          which modality, which backbone; the data read, reported and checked
    measure       what the modality measures before training: input size and layer cut
                  (images), pooled layers (texts)
    split         the plan, the stratified split, and a pass over every input (frozen
                  features for cached phases, else a read check), which also finds exact
                  copies among the examples
    fit           the trainer runs the plan (resuming an interrupted run)
    finish        validation report, --refit full, calibration, forgetting, the metrics
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from .. import devices, modalities, threads
from ..backbones import get_config
from ..data import duplicates
from ..data.datasets import LabelledData, require_two_per_class, stratified_split
from ..exceptions import DataError
from ..strategies import Plan, build_plan
from ..version import __version__
from . import crossfit
from . import distributed as dist
from .calibrate import calibrate, describe_calibration
from .config import TrainConfig
from .extract import WriteOnly, extract_features
from .features import FeatureCache, FeatureExtractor
from .forgetting import ForgettingMonitor
from .forgetting import describe as describe_forgetting
from .layers import choose_feature_layers
from .loop import Split, Trainer
from .metrics import classification_report
from .model import TrainedModel, preprocess_for, resolve_backbone, seeded_model, tune_source
from .predict import predict_logits
from .prefix import FrozenMaps, maps_on_the_way
from .refit import refit_full
from .rundir import RunWriter
from .sizing import Tapped, choose_input


@dataclass
class Run:
    """What the steps hand on to each other."""
    cfg: TrainConfig
    log: Callable[[str], None]
    progress: bool
    modality: modalities.Modality | None = None
    ds: LabelledData | None = None
    choice: dict | None = None  # --backbone auto's recommendation
    cache: FeatureCache = field(default_factory=FeatureCache)
    measurements: list = field(default_factory=list)
    layer_rows: list = field(default_factory=list)
    plan: Plan | None = None
    splits: tuple = ()  # (train Split, val Split)
    skipped: list = field(default_factory=list)
    extracted: list = field(default_factory=list)  # under torchrun: inputs each process extracted
    prepare_seconds: float = 0.0
    duplicates: dict | None = None  # exact copies among the examples (data/duplicates.py)
    hashes: dict = field(default_factory=dict)  # dataset index -> content hash, read examples
    tapped: Tapped | None = None  # the measurement's graph of the whole network (sizing.py)
    maps: FrozenMaps | None = None  # a top_tune phase's frozen maps from the first pass
    monitor: ForgettingMonitor | None = None  # drift and retention, when fine-tuning
    device: object = None  # the torch.device the model computes on (devices.py)
    started: float = field(default_factory=time.perf_counter)


def fit_run(data, writer: RunWriter | None, *, labels=None, config: TrainConfig | None = None,
            restart: bool = False, progress: bool = True, log=print,
            choose_backbone: Callable[[TrainConfig], dict] | None = None
            ) -> tuple[TrainedModel, Split]:
    """Train on `data` (see modalities.load_dataset); with `writer`, checkpoint into its run.
    `choose_backbone(cfg)` fills in `--backbone auto` (api.py ranks the candidates).
    Returns the trained model and the validation split (not written: the caller commits)."""
    threads.apply()  # the process's thread policy, before any torch work (threads.py)
    run = Run(replace(config or TrainConfig()).validate(), log, progress)
    with dist.guard():  # under torchrun: another process's death stops this one clearly
        read(run, data, labels, choose_backbone)
        measure(run)
        model, pre = split(run)
        trainer, history = fit(run, model, pre, writer, restart=restart)
        return finish(run, trainer, history, writer), run.splits[1]


def read(run: Run, data, labels, choose_backbone) -> None:
    """The modality and the backbone; the data, reported and checked for training."""
    cfg = run.cfg
    run.modality = modalities.detect(data, labels)
    if cfg.backbone == "auto" and choose_backbone is not None:
        run.choice = choose_backbone(cfg)
    bcfg = resolve_backbone(cfg, run.modality)
    tune_source(cfg, bcfg, run.log)
    dist.init_from_env()
    run.device = devices.resolve(cfg.device, local_rank=dist.local_rank(),
                                 processes=dist.local_world())
    if run.device.type == "cuda":
        torch.cuda.set_device(run.device)  # NCCL's collectives run on the current device
    if not dist.is_main():  # under torchrun only rank 0 talks and writes
        run.log, run.progress = (lambda *_: None), False
    run.ds = modalities.load_dataset(data, labels, skip_bad=cfg.skip_bad, modality=run.modality,
                                     text_options=cfg.text_options())
    run.log(summarize(run.ds))
    report_skipped(run.ds.skipped, run.log)
    if cfg.val_fraction > 0:
        require_two_per_class(run.ds)
    run.modality.describe_inputs(run.ds.sources, bcfg, cfg, run.log)


def measure(run: Run) -> None:
    """Input size (`--input-size auto`) and layer cut (`--cut auto`) by a cross-validated
    probe on a sample of the data, where the modality measures them, written into cfg.
    Without pre-trained weights (scratch) there is nothing to measure with: the
    architecture's native size."""
    cfg, log, bcfg = run.cfg, run.log, get_config(run.cfg.backbone)
    cuts = None if cfg.cut == "auto" and not bcfg.cut_of else ()
    if not run.modality.measures_input or (cfg.input_size != "auto" and cuts == ()):
        return
    if cfg.strategy == "scratch":
        if cfg.input_size == "auto":
            cfg.input_size = bcfg.input_size
            log(f"image size: {cfg.input_size}px (the architecture's native size: random "
                "weights cannot measure which size suits the data)")
        return
    graphs = {} if not dist.active() else None  # under torchrun each pass makes its own
    size, backbone, rows, reason = choose_input(run.ds, cfg, cache=run.cache,
                                                progress=run.progress, cuts=cuts,
                                                extractors=graphs)
    if graphs and backbone == cfg.backbone:  # the whole network: its measured graph serves
        run.tapped = graphs.get(size)
    for r in rows:
        log(f"  {r['image_size']:>4}px  {r['backbone']:<26} cv accuracy {r['cv_accuracy']:.3f}"
            f"  compute x{r['relative_compute']}")
    log(f"input: {backbone} at {size}px ({reason})")
    cfg.input_size, cfg.backbone = size, backbone
    run.measurements = rows


def _choose_layers(run: Run, train_ds) -> None:
    """`--layers auto`: for a pre-trained encoder whose modality pools top layers, how many,
    measured by cross-validation on the training split; 1 otherwise."""
    cfg = run.cfg
    if cfg.layers != "auto":
        return
    if not run.modality.measures_layers or not run.plan.pretrained:
        cfg.layers = 1
        return
    k, rows, reason = choose_feature_layers(train_ds, cfg, preprocess_for(cfg), cache=run.cache,
                                            progress=run.progress)
    for r in rows:
        run.log(f"  {r['layers']} layer(s)  cv accuracy {r['cv_accuracy']:.4f}")
    run.log(f"feature layers: {k} ({reason})")
    cfg.layers, run.layer_rows = k, rows


def split(run: Run):
    """The plan, the split, the starting model, and one pass over every input: features for
    cached phases, or a read check. Returns (model, pre-processing)."""
    cfg, ds = run.cfg, run.ds
    run.plan = build_plan(cfg.strategy, get_config(cfg.backbone).layer_groups, epochs=cfg.epochs,
                          lr=cfg.lr, unfreeze=cfg.unfreeze, modality=run.modality)
    y_all = np.array([ds.classes.index(v) for v in ds.labels])
    tr_idx, va_idx = stratified_split(ds.labels, cfg.val_fraction, cfg.seed)
    if (cfg.strategy == "auto" and not va_idx
            and not any(p.objective == "pairs" for p in run.plan.phases)):
        # how far to adapt is measured on validation (mixing.py); with none, the rule's choice
        # without evidence is the start, the probe: the gradient epochs would be thrown away
        run.plan = replace(build_plan("linear_probe", get_config(cfg.backbone).layer_groups,
                                      modality=run.modality), strategy="auto")
        run.log("auto without a validation split (--val-fraction 0): nothing to measure how far "
                "to adapt on, so the frozen-feature probe, which the mix rule keeps without "
                "evidence (--strategy top_tune or fine_tune adapts anyway)")
    _choose_layers(run, ds.subset(tr_idx))
    for phase in run.plan.phases:
        run.log(f"phase {phase.describe()}")
    model = seeded_model(cfg, len(ds.classes), run.plan).to(run.device)
    pre = preprocess_for(cfg)
    t_prep = time.perf_counter()
    run.splits = prepare_splits(run, y_all, (tr_idx, va_idx), model, pre)
    run.prepare_seconds = time.perf_counter() - t_prep
    report_skipped(run.skipped, run.log)
    return model, pre


def prepare_splits(run: Run, y_all, indices, model, pre) -> tuple[Split, Split]:
    """Read every input once: features for cached phases, or a read check (which inputs that
    the modality checked on loading need not have)."""
    cfg, ds = run.cfg, run.ds
    needs_features = any(p.cached and not p.fresh for p in run.plan.phases)
    tapped, run.tapped = run.tapped, None  # the measurement's graph: used once, let go
    views = run.modality.views(cfg.flip)
    own = FeatureExtractor(model.backbone) if needs_features else None

    def plain():  # the run's own extractor, or the measurement's graph in its place
        return own if own is None or tapped is None else tapped.stand_in(own, pre)

    # a top_tune phase's frozen maps, kept on the way where this pass runs the network anyway
    on_the_way = own and maps_on_the_way(model, _maps_group(run.plan), own,
                                         examples=len(ds), views=views)
    extractor = on_the_way or plain()
    splits, hashes, maps = [], {}, []  # hashes: dataset index -> content hash, where made
    for name, idx in zip(("train", "val"), indices):
        sub = ds.subset(idx)
        if run.modality.checked_on_loading and extractor is None:
            splits.append(Split(sub, y_all[np.asarray(idx, np.int64)]))
            hashes.update((i, run.modality.content_key(s)) for i, s in zip(idx, sub.sources))
            continue
        if not len(sub):
            splits.append(Split(sub, np.zeros(0, np.int64), np.zeros((0, views, 1), np.float32)))
            if on_the_way:
                maps.append(torch.zeros(0, views, int(np.prod(on_the_way.shape))))
            continue
        cache = run.cache if extractor else None
        if on_the_way:
            on_the_way.expect(len(sub) * views)
            if name == "val":  # the training pass ran every input: so does this one,
                cache = WriteOnly(run.cache)  # copies of training inputs included, for maps
        ex = extract_features(sub, extractor, pre if extractor else None, views=views,
                              cache=cache, skip_bad=cfg.skip_bad,
                              batch_size=cfg.batch_size, progress=run.progress,
                              max_pixels=cfg.max_pixels,
                              desc=f"{name} features" if extractor else f"checking {name}")
        run.skipped += ex.skipped
        if ex.per_rank is not None and extractor is not None:
            run.extracted = [a + b for a, b in zip(ex.per_rank, run.extracted or
                                                   [0] * len(ex.per_rank))]
        kept = sub.subset(ex.kept)
        splits.append(Split(kept, y_all[np.asarray(idx)[ex.kept]], ex.features))
        if on_the_way:
            maps.append(on_the_way.take(len(ex.kept), views))
            if maps[-1] is None:  # features from the cache: the phase computes its maps
                on_the_way, extractor = None, plain()
        # the pass's hashes where it made them (the feature cache's keys), else made here: a
        # read of each kept input, small beside a run that fine-tunes on them
        keys = ex.hashes
        if keys is None:
            keys = {j: run.modality.content_key(sub.sources[j]) for j in ex.kept}
        hashes.update((idx[j], keys[j]) for j in ex.kept)
    if len(set(splits[0].y.tolist())) < 2:
        skipped = run.skipped
        shown = "; ".join(skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3
                                          else "")
        raise DataError(f"fewer than two classes have readable training {ds.unit} after "
                        f"skipping {len(skipped)} bad file(s) ({shown}); fix or replace them")
    run.hashes = hashes
    if on_the_way:
        run.maps = FrozenMaps(on_the_way.rest, on_the_way.shape, *maps, first=on_the_way.first)
    check_duplicates(run, set(indices[1]))
    return splits[0], splits[1]


def _maps_group(plan) -> str | None:
    """The first group a top_tune phase tunes, where only cached head phases come before it
    (the body still the pre-trained one, whose maps a first pass can keep); else None."""
    for phase in plan.phases:
        if phase.frozen_maps and phase.train_groups:
            return phase.train_groups[0]
        if not phase.cached:
            return None
    return None


def check_duplicates(run: Run, val: set) -> None:
    """Exact copies among the examples the pass hashed, said and recorded (data/duplicates.py)."""
    hashes = run.hashes
    order = sorted(hashes)
    root = f"{run.ds.root}{os.sep}"  # files named from the data's folder, as the classes are
    names = [n[len(root):] if n.startswith(root) else n for n in run.ds.describe_sources()]
    run.duplicates = duplicates.find([hashes[i] for i in order], [run.ds.labels[i] for i in order],
                                     [names[i] for i in order], [i in val for i in order])
    if run.duplicates is not None:
        run.log(duplicates.describe(run.duplicates, run.ds.unit))


def fit(run: Run, model, pre, writer: RunWriter | None, *, restart: bool):
    """The trainer on the plan, from a checkpoint of an interrupted run with the same
    settings when there is one."""
    cfg, ds, log = run.cfg, run.ds, run.log
    stored = {"headstart_version": __version__, "data": str(ds.root),
              "modality": run.modality.name, "examples": len(ds),
              "backbone_choice": run.choice, **cfg.to_dict(),
              "image_size_measurements": run.measurements, "layer_measurements": run.layer_rows}
    # rank 0 opens the run; every process resumes from its checkpoint (broadcast)
    resume = dist.from_main(writer.open(stored, restart=restart) if writer else None)
    if resume and writer is not None:
        log(f"resuming the interrupted run in {writer.partial} "
            f"({len(resume['history'])} epoch(s) done)")
    fine_tunes = run.plan.pretrained and any(not p.cached for p in run.plan.phases)
    run.monitor = ForgettingMonitor(model.backbone, pre) if fine_tunes else None
    if dist.world() > 1:
        log(f"torchrun: {dist.world()} processes ({dist.describe()['backend']}), "
            f"{dist.per_rank_batch(cfg.batch_size)} examples per step in each: an effective "
            f"batch of {dist.per_rank_batch(cfg.batch_size) * dist.world()}, at one process's "
            "learning rates")
    trainer = Trainer(model, run.plan, pre=pre, cfg=cfg, writer=writer, progress=run.progress,
                      log=log)
    trainer.premade_maps, run.maps = run.maps, None
    if crossfit.eligible(trainer, run.splits[1]):  # a small validation split: folds too
        def fold_trainer() -> Trainer:
            fold = seeded_model(cfg, len(ds.classes), run.plan).to(run.device)
            # the run's settings without refitting heads: a fold's model is thrown away
            return Trainer(fold, run.plan, pre=pre, cfg=replace(cfg, refit="none"),
                           progress=False, log=lambda *_: None)
        trainer.cross_fit = lambda: crossfit.evidence(fold_trainer, *run.splits, seed=cfg.seed,
                                                      log=log)
    history = trainer.fit(*run.splits, resume=resume)
    return trainer, history


def finish(run: Run, trainer: Trainer, history: list[dict], writer) -> TrainedModel:
    """The kept model's validation report, `--refit full`, calibration and forgetting, and
    the run's metrics."""
    cfg, classes, (train_split, val_split) = run.cfg, run.ds.classes, run.splits
    model, pre = trainer.model, trainer.pre
    metrics, val_logits = final_metrics(model, val_split, pre, cfg, classes, run.progress,
                                        holdout=trainer.holdout_logits)
    for key, value in (("mix", trainer.mix), ("final_head", trainer.final_head)):
        if value is not None:
            metrics[key] = value
    if trainer.holdout_logits is not None and cfg.refit != "none":
        metrics["head_refit_on"] = len(train_split.y) + len(val_split.y)
    epochs_run = len(history)
    if cfg.refit == "full":  # the validation figures above stay those of the selected model
        refit = refit_full(lambda: seeded_model(cfg, len(classes), run.plan).to(run.device),
                           run.plan, trainer, train_split, val_split, pre=pre, cfg=cfg,
                           writer=writer, progress=run.progress, log=run.log)
        if refit is not None:
            model, rows, metrics["refit_full"] = refit
            history = history + rows
    if val_logits is not None:  # the kept model's probabilities, calibrated on validation
        metrics["calibration"] = calibrate(val_logits, val_split.y, seed=cfg.seed)
        model.head.temperature.fill_(metrics["calibration"]["temperature"])
        run.log(describe_calibration(metrics["calibration"]))
    if run.monitor is not None:
        metrics["forgetting"] = run.monitor.report(model.backbone)
        for line in describe_forgetting(metrics["forgetting"]):
            run.log(line)
    metrics.update({"strategy": cfg.strategy, "plan": describe_plan(run.plan),
                    "backbone": cfg.backbone,
                    "input_size": cfg.input_size, "train_examples": len(train_split.y),
                    "val_examples": len(val_split.y), "skipped": run.ds.skipped + run.skipped,
                    "epochs_run": epochs_run, "stopped_early": trainer.stopped_early,
                    "seconds": round(time.perf_counter() - run.started, 1),
                    "prepare_seconds": round(run.prepare_seconds, 2),
                    "threads": threads.record(),
                    "compute": devices.describe(run.device, trainer.autocast)})
    if run.duplicates is not None:
        metrics["duplicates"] = run.duplicates
    if dist.world() > 1:
        metrics["distributed"] = distributed_metrics(run, trainer)
    # the saved model, and what the caller does with it (predict, export), is on the CPU
    return TrainedModel(model.cpu(), classes, cfg, metrics, history,
                        trained_on=sorted({h for h in run.hashes.values() if h}))


def describe_plan(plan) -> dict:
    """What the strategy planned (for `auto`, what it adapts with), for metrics.json."""
    return {"strategy": plan.strategy, "phases": [p.describe() for p in plan.phases],
            "mix": plan.mix}


def distributed_metrics(run: Run, trainer: Trainer) -> dict:
    """What a torchrun job did: its processes, the batch and rate rule, the sampler, the
    BatchNorm handling, the inputs each process extracted, where each resumed from."""
    resumed = dist.gather(trainer.resumed_from)
    return {**dist.describe(), "per_process_batch": dist.per_rank_batch(run.cfg.batch_size),
            "effective_batch": dist.per_rank_batch(run.cfg.batch_size) * dist.world(),
            "extracted_per_process": run.extracted,
            "resumed_from": [list(r) if r else None for r in resumed]}


def final_metrics(model, val: Split, pre, cfg, classes, progress, holdout=None):
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


def summarize(ds: LabelledData) -> str:
    counts = ds.counts()
    lines = [f"{len(ds)} {ds.unit} in {len(counts)} classes from {ds.root}"]
    lines += [f"  {c}: {n}" for c, n in counts.items()]
    lines += [f"  {note}" for note in ds.ignored_notes()]
    return "\n".join(lines)


def report_skipped(skipped: list[str], log: Callable[[str], None]) -> None:
    if skipped:
        log(f"skipped {len(skipped)} bad input(s) (--skip-bad):")
        for s in skipped:
            log(f"  {s}")


def upgrade_metrics(metrics: dict) -> dict:
    """metrics.json of runs written by earlier versions, in today's terms (the old keys
    stay)."""
    renamed = {"train_images": "train_examples", "val_images": "val_examples",
               "image_size": "input_size"}
    return {**metrics, **{new: metrics[old] for old, new in renamed.items()
                          if old in metrics and new not in metrics}}
