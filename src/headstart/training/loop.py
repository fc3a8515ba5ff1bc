"""The trainer: runs any strategy's plan, epoch by epoch, with early stopping, checkpoints that
allow resuming after Ctrl-C or a killed process, progress bars and a history.

Under torchrun (torch.distributed initialised) each process trains on its shard of every epoch,
gradients are averaged by DistributedDataParallel, and only rank 0 writes files."""
from __future__ import annotations

import contextlib
import copy
import math
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import devices, modalities
from ..strategies import Phase, Plan, apply_phase, param_groups
from . import distributed as dist
from .batches import CLIP_NORM, CROP_SCALE, JITTER, Split, epoch_shape, use_bf16, warmup_cosine
from .checkpoints import Checkpoints, restore
from .closedform import ClosedFormHeads, loss_and_accuracy
from .config import PATIENCE
from .forgetting import L2SP
from .mixing import better, choose_mix, interpolate, mix_reason
from .pairs import pair_order
from .predict import predict_logits
from .prefix import FrozenMaps, frozen_maps
from .rundir import RunWriter
from .steps import backward_pieces

PAIR_ATTENTION_DROPOUT = 0.0


class Trainer(ClosedFormHeads):
    def __init__(self, model: nn.Module, plan: Plan, *, pre, cfg, writer: RunWriter |
                 None = None, progress: bool = True, log=tqdm.write,
                 mix_alpha: float | None = None) -> None:
        self.model, self.plan, self.pre, self.cfg = model, plan, pre, cfg
        # a mix chosen by an earlier run on the same data, replayed without validation
        self.mix_alpha = mix_alpha
        self.writer = writer if dist.is_main() else None
        self.progress = progress and dist.is_main()
        self.log = log if dist.is_main() else (lambda *_: None)
        self.modality = modalities.of(model.backbone)  # its batches, views and augmentation
        self.l2sp = L2SP(model.backbone, cfg.l2sp) if cfg.l2sp > 0 and plan.pretrained else None
        # the model is on the run's device (pipeline.py): batches go there; gradient steps run
        # under autocast at the precision devices.py chooses, fp16 with loss scaling
        self.device = devices.of(model)
        self.autocast = devices.autocast_dtype(self.device, cfg.precision,
                                               use_bf16(cfg.precision, pre.size))
        self.scaler = devices.scaler(self.device, self.autocast)
        # heads on the tuned body's features are fitted on standardised features, except in a
        # plan that trains under the pair objective: its embeddings are trained for cosine
        # similarity, and the heads on them are fitted on them as they are, as SetFit's
        # logistic head is (measured on a headlines dev split, 8 per class, 5 seeds: +1.2
        # points, better on every seed). A head on the frozen features is the linear probe's,
        # standardised, in every plan: a mix of 0 is exactly the probe
        self.pairs = any(p.objective == "pairs" for p in plan.phases)
        self.standardize = not self.pairs
        self.history: list[dict] = []
        self.best_score = -math.inf
        self.best_loss = math.inf
        self.best_state: dict | None = None
        self.stopped_early = False
        self.since_best = 0
        # (phase index, epoch) of the best state: where validation chose to stop (a fresh head
        # phase, which only finishes the best body, does not move it)
        self.best_at: tuple[int, int] | None = None
        # validation logits of a plan's final head (a probe's, or contrastive's) as fitted on
        # the training split alone, kept because that head is then refitted on training +
        # validation examples
        self.holdout_logits: np.ndarray | None = None
        # what judged the latest gradient epoch and the best tuned one, which the mix of 1 (the
        # best tuned weights) reuses instead of computing again: the (train, val) features under
        # the pair objective, else the validation scores with their right/wrong flags. At the
        # training's precision, as they only judge; a final head learns from fp32 features
        self._last_judged: tuple | dict | None = None
        self._tuned_judged: tuple | dict | None = None
        # plans that mix (fine_tune, gradual): the weights and validation scores where the
        # gradient phases started (the probe), and of the best gradient epoch; the chosen mix
        self.start: tuple[dict, dict] | None = None
        self.tuned: tuple[dict, dict] | None = None
        self.mix: dict | None = None
        self.final_head: dict | None = None  # the closed-form head fitted after fine-tuning
        self.resumed_from: tuple[int, int] | None = None  # (phase, epoch) of a checkpoint
        self.rank_batch = cfg.batch_size  # examples per step in this process (distributed.py)
        # a top_tune phase's frozen maps: the frozen groups' output, computed once (prefix.py),
        # or kept by the run's first pass over its inputs (premade_maps)
        self.maps: FrozenMaps | None = None
        self.premade_maps: FrozenMaps | None = None
        self.checkpoints = Checkpoints(self.writer) if self.writer is not None else None
        # where validation is small, the same plan on other folds (crossfit.py): a callable
        # that returns their mix evidence; and this run's own, for a caller that ran it so
        self.cross_fit = None
        self.mix_evidence: dict | None = None

    # -- the plan -------------------------------------------------------------------------
    def fit(self, train: Split, val: Split, *, resume: dict | None = None) -> list[dict]:
        start_phase, start_epoch = 0, 0
        if resume:
            start_phase, start_epoch = restore(self, resume)
        for pi, phase in enumerate(self.plan.phases):
            # after an early stop only a fresh head phase runs: it finishes the best body
            if pi < start_phase or (self.stopped_early and not phase.fresh):
                continue
            if phase.fresh:  # the head goes on the best body, or the mix validation chose
                self._finish_body(train, val)
            apply_phase(self.model, phase)
            if phase.cached:
                self._cached_phase(pi, phase, train, val)
                continue
            if self.plan.mix and self.start is None and (len(val.y) or self.mix_alpha is not None):
                self.start = (copy.deepcopy(self.model.state_dict()), self._val_scores())
            # pair steps run without dropout on attention probabilities (hidden-state dropout
            # stays): on CPUs attention with that dropout materialises every 256 x 256 matrix.
            # Measured, one pair step of 16 windows of 256 tokens (MiniLM): 3.33 -> 2.30 s, peak
            # memory 2.6 -> 1.6 GB; on dev splits the same accuracy, articles' runs in 0.58x the
            # time (README)
            with (self.model.backbone.attention_dropout(PAIR_ATTENTION_DROPOUT)
                  if phase.objective == "pairs" else contextlib.nullcontext()):
                self._gradient_phase(pi, phase, train, val,
                                     first_epoch=start_epoch if pi == start_phase else 0,
                                     resume=resume if pi == start_phase else None)
        self._finish_body(train, val)
        if (self.start is not None and self.final_head is None and self.cfg.refit != "none"
                and not self.plan.phases[-1].cached):
            self._refit_tuned_head(train, val)
        self.maps = None  # the memory they hold
        return self.history

    def _finish_body(self, train: Split, val: Split) -> None:
        """Load the best state; once, where the plan mixes, choose the mix of the start and the
        best tuned weights (mixing.py)."""
        if self.mix is not None:
            if not self.plan.phases[-1].fresh and self.best_state is not None:
                self.model.load_state_dict(self.best_state)
            return
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.start is not None and self.mix_alpha is not None:  # --refit full replays it
            self.model.load_state_dict(interpolate(self.start[0], self.model.state_dict(),
                                                   self.mix_alpha))
            self.mix = {"alpha": self.mix_alpha, "mixes": [], "replayed": True}
        elif self.start is not None and self.tuned is not None:
            self._choose_mix(train, val)

    def _val_scores(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {"val_acc": last.get("val_acc", 0.0), "val_loss": last.get("val_loss", math.inf)}

    def _choose_mix(self, train: Split, val: Split) -> None:
        """Keep the mix of the probe and the best tuned weights that validation prefers (see
        mixing.py); log and record every mix's scores. Under the pair objective each mix is
        judged by a head fitted on its own embeddings (at the training's precision: they only
        choose; the final head phase fits on fp32 ones of the kept mix); the mix of 0 by the
        probe's own head (standardised, on the frozen features)."""
        (start, _), (end, _) = self.start, self.tuned
        pairs = self.pairs

        def validate(alpha: float) -> dict:
            # a mix of 1 is the best epoch's weights, which that epoch's validation judged
            judged = self._tuned_judged if alpha == 1 else None
            if not pairs:
                return judged or self._validate(val, right=True)
            # a mix of 0 is the pre-trained encoder: the probe, on its cached features
            f = ((train.features, val.features) if alpha == 0 else judged
                 or (self._embed(train, judge=True), self._embed(val, judge=True)))
            scores, logits = self._fit_head(f[0], train.y, f[1], val.y,
                                            standardize=True if alpha == 0 else None)
            return {**scores, "right": logits.argmax(1) == val.y}

        evidence = {}

        def recorded(alpha: float) -> dict:  # what a run on another fold hands its caller
            scores = validate(alpha)
            evidence[alpha] = {"right": scores["right"], "val_loss": scores["val_loss"]}
            return scores

        more = self.cross_fit() if self.cross_fit is not None else []
        alpha, rows = choose_mix(self.model, start, end, recorded, prefer_end=pairs, more=more)
        self.mix_evidence = evidence
        self.mix = {"alpha": alpha, "mixes": rows}
        pooled = len(val.y) + sum(len(m[alpha]["right"]) for m in more)
        if more:
            self.mix.update(folds=len(more) + 1, examples=pooled)
        what = "tuned encoder" if pairs else "fine-tuned weights"
        where = (f"on validation and {len(more)} more folds ({pooled} examples)" if more
                 else "on validation")
        self.log(f"mix of the probe (0) and the {what} (1), {where}: "
                 + "  ".join(f"{r['alpha']:g}: {r['val_acc']:.4f}" for r in rows)
                 + f"; kept {alpha:g}" + mix_reason(alpha, rows, pairs))

    def _gradient_phase(self, pi: int, phase: Phase, train: Split, val: Split, *,
                        first_epoch: int, resume: dict | None) -> None:
        model = self.model
        if self.cfg.channels_last and self.modality.channels_last:
            model.to(memory_format=torch.channels_last)
        self.maps = None
        if phase.frozen_maps and phase.train_groups:
            self.maps = frozen_maps(model, phase.train_groups[0], train, val, pre=self.pre,
                                    views=self.modality.views(self.cfg.flip),
                                    batch_size=self.cfg.batch_size * 2,
                                    max_pixels=self.cfg.max_pixels, progress=self.progress,
                                    log=self.log, premade=self.premade_maps)
            self.premade_maps = None
        opt = adamw(param_groups(model, phase, backbone_decay=0.0 if self.l2sp else None))
        shard = len(dist.EpochSampler(len(train.ds), seed=0))
        self.rank_batch = dist.per_rank_batch(self.cfg.batch_size)
        _, _, steps_per_epoch = epoch_shape(phase.objective, shard, self.rank_batch,
                                            drop_last=self.modality.drop_last)
        total = max(1, steps_per_epoch * (phase.schedule_epochs or phase.epochs))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, steps_per_epoch))
        if resume is not None and resume.get("optimizer"):
            opt.load_state_dict(resume["optimizer"])
            sched.load_state_dict(resume["scheduler"])
            if resume.get("scaler"):  # fp16's loss scale, as it had grown
                self.scaler.load_state_dict(resume["scaler"])
        if first_epoch == 0:
            self.since_best = 0  # patience counts within a phase (gradual's are one epoch)
        net = dist.wrap(model)
        self._trained = [p for g in opt.param_groups for p in g["params"]]
        augment = self.modality.augmenter(
            self.pre, flip=self.cfg.flip, crop_scale=CROP_SCALE if self.cfg.augment else (1.0, 1.0),
            jitter=JITTER if self.cfg.augment else 0.0)
        for epoch in range(first_epoch, phase.epochs):
            t0 = time.perf_counter()
            seed = self.cfg.seed * 1000 + pi * 100 + epoch
            torch.manual_seed(seed + 7919 * dist.rank())  # each process its own dropout masks
            row = {"phase": phase.name, "epoch": epoch + 1}
            row.update(self._train_epoch(net, opt, sched, train, augment, seed, phase, epoch))
            if phase.objective == "pairs":  # judged by a head fitted on the new embeddings
                self._last_judged = (self._embed(train, judge=True),
                                     self._embed(val, judge=True))
                scores, _ = self._fit_head(self._last_judged[0], train.y, self._last_judged[1],
                                           val.y)
                scores.pop("train_loss")  # the epoch's loss is the pair loss
                row.update(scores)
            elif len(val.y):
                self._last_judged = self._validate(val, right=True)
                row.update({k: v for k, v in self._last_judged.items() if k != "right"})
            if self._end_epoch(pi, epoch + 1, row, t0, optimizer=(opt, sched)):
                break

    def _batches(self, train: Split, augment, seed: int, epoch: int, phase: Phase):
        """(batch, targets) pairs of one epoch of this process's shard, and their number."""
        order = dist.shard(range(len(train.ds)), seed=seed, epoch=epoch)
        per_pass = len(order)
        bs, passes, _ = epoch_shape(phase.objective, per_pass, self.rank_batch,
                                    drop_last=self.modality.drop_last)
        if phase.objective == "pairs":  # same-class chunks: every batch holds positive pairs
            order = [i for k in range(passes)
                     for i in pair_order(list(order), train.y, seed * 31 + k)]
        if self.maps is not None:
            return self.maps.batches(order, train.y, batch_size=bs, seed=seed, epoch=epoch,
                                     drop_last=self.modality.drop_last)
        return self.modality.train_batches(train, order, batch_size=bs,
                                           pairs=phase.objective == "pairs", pre=self.pre,
                                           augment=augment, seed=seed, epoch=epoch,
                                           per_pass=per_pass, workers=self.cfg.workers)

    def _train_epoch(self, net, opt, sched, train: Split, augment, seed, phase, epoch) -> dict:
        pairs = phase.objective == "pairs"
        batches, n_batches = self._batches(train, augment, seed, epoch, phase)
        self.model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(batches, desc=f"{phase.name} {epoch + 1}/{phase.epochs}", unit="batch",
                   total=n_batches, disable=not self.progress, leave=False)
        for x, t in bar:
            # a batch of long texts goes in pieces of bounded size, the same step (steps.py)
            pieces = [(x, t)] if self.maps is not None else self.modality.step_pieces(x, t)
            pieces = [(self._to_device(px), devices.to(pt, self.device)) for px, pt in pieces]
            # the batch's own order: backward_pieces hands back the logits in it, where the
            # pieces may hold the targets in another (documents cut between windows first)
            t = devices.to(t, self.device)
            opt.zero_grad(set_to_none=True)
            value, out = backward_pieces(
                net, lambda px: self._forward(net, px, pairs), pieces, pairs=pairs,
                scaler=self.scaler, extra=self.l2sp.penalty if self.l2sp is not None else None)
            self.scaler.unscale_(opt)
            # one unlucky batch (an augmented view the head has never seen) must not throw the
            # pre-trained weights far: clip the global gradient norm
            torch.nn.utils.clip_grad_norm_(self._trained, CLIP_NORM)
            self.scaler.step(opt)
            self.scaler.update()
            sched.step()
            if not math.isfinite(value):  # an fp16 step that overflowed: skipped, not counted
                continue
            loss_sum += value * len(t)
            correct += 0 if pairs else int((out.argmax(1) == t).sum())
            seen += len(t)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}",
                            **({} if pairs else {"acc": f"{correct / seen:.3f}"}))
        dist.sync_buffers(self.model)  # one model to validate and keep, not one per process
        loss_sum, correct, seen = dist.all_reduce_sum(loss_sum, correct, seen)
        row = {"train_loss": loss_sum / max(seen, 1), "lr": opt.param_groups[-1]["lr"]}
        if pairs:  # the pair loss; train_acc comes from the head fitted after the epoch
            return {"pair_loss": row.pop("train_loss"), **row}
        return {**row, "train_acc": correct / max(seen, 1)}

    def _to_device(self, x):
        x = devices.to(x, self.device)
        if self.cfg.channels_last and self.modality.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _forward(self, net, x, pairs: bool) -> torch.Tensor:
        with devices.autocast(self.device, self.autocast):
            if self.maps is not None:  # the top groups on the frozen groups' output
                return self.model.head(self.maps.rest(x))
            return net(x, embed=pairs)  # embeddings under the pair objective, else logits

    def _validate(self, val: Split, *, right: bool = False) -> dict:
        """An epoch's or a mix's validation scores. They only choose (the best epoch, the mix):
        the pass over the validation inputs runs at the training's autocast precision, as its
        steps did (bf16 EfficientNet-Lite0 at 168 px: 6 ms an image against 18 fp32 on one
        thread of this CPU; these passes were a third of a whole-network fine-tune's time).
        The top groups on cached maps stay fp32: that pass is a fraction of a second."""
        if self.maps is not None:
            logits = self.maps.logits(self.model)
        else:
            logits = predict_logits(self.model, val.ds, self.pre, flip=self.cfg.flip,
                                    engine="torch", batch_size=self.cfg.batch_size * 2,
                                    progress=False, autocast=self.autocast)
        scores = loss_and_accuracy("val", logits, val.y)
        if right:  # which examples it gets right, for the paired comparison of mixes
            scores["right"] = np.asarray(logits).argmax(1) == np.asarray(val.y)
        return scores

    # -- bookkeeping ------------------------------------------------------------------------
    def _end_epoch(self, pi: int, epoch: int, row: dict, t0: float, *, optimizer) -> bool:
        """Record the epoch, keep the best weights, checkpoint; True to stop early."""
        row["seconds"] = round(time.perf_counter() - t0, 2)
        self.history.append(row)
        score = row.get("val_acc", row.get("train_acc", 0.0))
        loss = row.get("val_loss", math.inf)
        # better accuracy, or the same accuracy at a lower loss (a tie is not a reason to keep
        # the earlier weights: on small validation sets accuracy moves in coarse steps)
        tie_break = abs(score - self.best_score) <= 1e-9 and loss < self.best_loss - 1e-6
        # a fresh head phase is fitted on the best body found so far: it is that state, finished
        finishes = self.plan.phases[pi].fresh
        phase = self.plan.phases[pi]
        if self.start is not None and not phase.cached and "val_acc" in row and better(
                row, self.tuned[1] if self.tuned else None):
            self.tuned = (copy.deepcopy(self.model.state_dict()),
                          {"val_acc": row["val_acc"], "val_loss": row["val_loss"]})
            # (features judge a pair plan's mixes, scores a classification plan's)
            self._tuned_judged = self._last_judged if (phase.objective == "pairs") == self.pairs \
                else None
        if score > self.best_score + 1e-9 or tie_break or finishes or "val_acc" not in row:
            self.best_score, self.best_loss = score, loss
            self.best_state = copy.deepcopy(self.model.state_dict())
            if not finishes:
                self.best_at = (pi, epoch)
            self.since_best = 0
        else:
            self.since_best += 1
        shown = {k: (f"{v:.2e}" if k == "lr" else f"{v:.4f}" if isinstance(v, float) else v)
                 for k, v in row.items()}
        self.log("  ".join(f"{k}={v}" for k, v in shown.items()))
        patience = PATIENCE if self.cfg.patience is None else self.cfg.patience
        stop = not phase.cached and self.since_best >= patience and epoch < phase.epochs
        if stop:
            self.stopped_early = True
            self.log(f"early stop: no validation gain in {patience} epoch(s)")
        if self.writer is not None:
            done_phase = phase.cached or epoch >= phase.epochs or stop
            self.writer.write_history(self.history)
            if done_phase or self.checkpoints.due():
                self.checkpoints.save(self, pi, epoch, done_phase, optimizer)
        return stop


def adamw(groups: list[dict]) -> torch.optim.AdamW:
    """AdamW over the phase's parameter groups, with PyTorch's fused kernel where every
    parameter allows it (floating point, on the CPU or a GPU): the same update in one pass over
    the weights, about 6x faster on the CPU than the default per-tensor loop for a 22M-parameter
    encoder, where that loop took a quarter of a few-shot text run."""
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                 for p in params)
    return torch.optim.AdamW(groups, fused=fused or None)
