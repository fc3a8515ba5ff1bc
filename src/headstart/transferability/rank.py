"""Rank candidate source models on the target data before any training, and recommend one.

``rank`` takes a class-stratified sample of the data (about 1,000 examples), extracts each
candidate's features (cached), and scores them: LogME and H-score on the features, LEEP and
NCE on the source head's predictions where the candidate has one (N/A otherwise), and a domain
column. Every score comes with a 95 % interval from random half-samples (see `resamples`);
every candidate is scored on the same halves. ``recommend`` (in `recommend.py`) turns the
ranking into a backbone, a strategy and a depth, with its reason.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Callable

import numpy as np

from .. import modalities, threads
from ..exceptions import ConfigError
from ..training.features import FeatureCache
from ..training.sizing import sample_per_class
from .candidates import (Candidate, CandidateFeatures, by_network, network_features,
                         parse_candidates)
from .controls import (agreement, format_controls, knn_accuracy, prior_of, probe_accuracy,
                       standardize, unit_rms)
from .registry import ranking_scores
from .scores import hscore_rows as _hscore_rows  # noqa: F401  (its former home)
from .similarity import frechet_distance, mmd

TARGET_EXAMPLES = 1000  # default sample: about this many examples in all...
MIN_PER_CLASS = 5  # ...and at least this many per class
SCORE_NAMES = {name: s.label for name, s in ranking_scores().items()}  # the table's columns
DOMAIN_LABELS = {"msp": "src-conf ↑*", "mmd": "MMD ↓*", "none": "domain*"}
DOMAIN_NOTES = {
    "msp": "* src-conf (higher = closer to the source domain): mean max-softmax probability of "
           "the candidate's source head on this data, an out-of-domain proxy, since no sample "
           "of the source domain ships (pass source_sample= for a feature-distance column)",
    "mmd": "* MMD (lower = closer): squared kernel MMD between the candidate's features of "
           "source_sample and of this data; frechet: Fréchet distance of their Gaussian fits",
    "none": "* domain: n/a (no source head and no source_sample given)"}


@dataclass(frozen=True)
class Interval:
    value: float  # on the whole sample
    lo: float  # value - 1.96 sd of the half-sample values (see `resamples`)
    hi: float  # value + 1.96 sd

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"

    def clipped(self, lo: float, hi: float) -> "Interval":
        """The interval cut to the score's range (an accuracy stays in [0, 1])."""
        return Interval(self.value, max(lo, self.lo), min(hi, self.hi))


@dataclass
class CandidateResult:
    candidate: Candidate
    scores: dict[str, Interval | None]  # None: not applicable (no source head)
    domain: Interval | None
    dim: int
    gflops: float
    seconds: float  # features + scores
    from_cache: int
    frechet: float | None = None
    prior: float | None = None  # the static prior (controls.prior_of)
    probe: float | None = None  # the yardstick: leave-one-out ridge probe accuracy

    @property
    def name(self) -> str:
        return self.candidate.name


@dataclass
class RankResult:
    results: list[CandidateResult]  # best first by `by`; N/A last
    by: str
    modality: str
    n_examples: int  # in the scored sample
    per_class: dict[str, int]  # examples per class in the whole data
    max_per_class: int
    domain_method: str  # msp | mmd | none
    n_boot: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        return format_table(self)

    __str__ = table

    def controls(self) -> dict:
        """Do the learned scores beat the k-NN and prior controls here (controls.agreement)."""
        return agreement(self.results, SCORE_NAMES)

    def to_dict(self) -> dict:
        """Plain data (for JSON): every field, candidates and intervals as dicts, and the
        agreement of each score with the probe yardstick ("controls")."""
        return {**asdict(self), "controls": self.controls()}


def rank(data, *, candidates="all", labels=None, max_per_class: int | None = None,
         n_boot: int = 10, seed: int = 0, by: str = "logme", image_size: int | None = None,
         source_sample=None, truncate: bool = False, text_options=None, skip_bad: bool = False,
         engine: str = "auto", cache: bool = True, progress: bool = True,
         log: Callable[[str], None] = print) -> RankResult:
    """Score each candidate (spec syntax: candidates.py) on a class-stratified sample of at
    most `max_per_class` examples per class (default: about 1,000 in all, at least 5 per
    class), with 95 % intervals from `n_boot` random half-samples (see `resamples`).
    `image_size`: pixels for every image candidate (default: each backbone's native size).
    `source_sample`: data from the source domain (a folder, a dataset, or a list of images or
    texts) for an MMD/Fréchet domain column instead of the source-head proxy. Logs one line
    per candidate; `RankResult.table()` is the ranked table."""
    start = time.perf_counter()
    threads.apply()  # the process's thread policy (threads.py)
    if by not in SCORE_NAMES:
        raise ConfigError(f"cannot rank by '{by}'; choose one of {', '.join(SCORE_NAMES)}")
    if int(n_boot) < 2:
        raise ConfigError(f"n_boot must be at least 2; got {n_boot}.")
    modality = modalities.detect(data, labels)
    ds = modalities.load_dataset(data, labels, skip_bad=skip_bad, modality=modality,
                                 text_options=text_options)
    for line in ds.ignored_notes() + [f"skipped: {s}" for s in ds.skipped]:  # never silent
        log(line)
    cands = parse_candidates(candidates, modality, seed=seed)
    per_class = _per_class(max_per_class, len(ds.classes))
    sub = ds.subset(sample_per_class(ds.labels, per_class, seed))
    log(f"ranking {len(cands)} candidate(s) on {len(sub)} of {len(ds)} {ds.unit} "
        f"({len(ds.classes)} classes, at most {per_class} per class)")
    feature_kw = dict(image_size=image_size, cache=FeatureCache() if cache else None,
                      engine=engine, truncate=truncate, skip_bad=skip_bad, progress=progress)
    source = _source(source_sample, modality, len(sub), seed)
    results = _score_all(cands, sub, source, by=by, n_boot=n_boot, seed=seed, log=log,
                         feature_kw=feature_kw)
    method = "mmd" if source is not None else (
        "msp" if any(r.domain is not None for r in results) else "none")
    out = RankResult(order(results, by), by, modality.name, len(sub), ds.counts(), per_class,
                     method, int(n_boot), time.perf_counter() - start)
    out.notes = control_notes(out)
    for note in out.notes:
        log(note)
    return out


def _score_all(cands, sub, source, *, by, n_boot, seed, log, feature_kw):
    """Features (one pass per network) and scores of every candidate, logged as they come."""
    y = np.array([sub.classes.index(v) for v in sub.labels])
    results: list[CandidateResult] = []
    for group in by_network(cands):
        feats = network_features(group, sub, **feature_kw)
        src = network_features(group, source, **feature_kw) if source is not None else None
        for j, (cand, cf) in enumerate(zip(group, feats)):
            r = score_features(cand, cf, y, n_boot=n_boot, seed=seed,
                               source=None if src is None else src[j].features)
            shown = r.scores[by] if r.scores[by] is not None else "n/a"
            shared = f", one pass shared by {cf.shared + 1}" if cf.shared else ""
            log(f"[{len(results) + 1}/{len(cands)}] {cand.name}: {r.dim}-d, {SCORE_NAMES[by]} "
                f"{shown} (features {cf.seconds:.1f} s{shared}, {cf.from_cache} cached)")
            results.append(r)
    return results


def _per_class(max_per_class, n_classes: int) -> int:
    if max_per_class is None:
        return max(MIN_PER_CLASS, -(-TARGET_EXAMPLES // n_classes))
    if int(max_per_class) < 2:
        raise ConfigError(f"max_per_class must be at least 2; got {max_per_class}.")
    return int(max_per_class)


def _source(source_sample, modality: str, rows: int, seed: int):
    """At most `rows` examples of the source-domain sample (labels, if any, are not used)."""
    if source_sample is None:
        return None
    if isinstance(source_sample, (list, tuple)):  # bare images or texts
        source_sample = (list(source_sample), ["source"] * len(source_sample))
    args = source_sample if isinstance(source_sample, tuple) else (source_sample,)
    ds = modalities.load_dataset(*args, modality=modality, min_classes=1)
    return ds.subset(sorted(np.random.default_rng(seed).permutation(len(ds))[:rows].tolist()))


# ----------------------------------------------------------------------------- scoring

def score_features(cand: Candidate, cf: CandidateFeatures, y: np.ndarray, *, n_boot: int = 10,
                   seed: int = 0, source: np.ndarray | None = None) -> CandidateResult:
    """Every score of one candidate's rescaled features (see controls.py), each with its
    resampling interval, the k-NN control and the probe yardstick; the domain column from
    `source` features when given, else from the source head's confidence."""
    start = time.perf_counter()
    yk = np.unique(y[cf.kept], return_inverse=True)[1]
    f, z, p = unit_rms(cf.features), standardize(cf.features), cf.source_probs
    fns: dict[str, tuple | None] = {
        **_ranking_fns(f, p, yk),
        "knn": (lambda idx: knn_accuracy(z[idx], yk[idx], seed=seed),
                lambda: knn_accuracy(z, yk, seed=seed)),
        "domain": None if p is None else (lambda idx: float(p[idx].max(1).mean()),
                                          lambda: float(p.max(1).mean()))}
    draws = resamples(yk, n_boot, seed)
    with _one_blas_thread():
        scores = {k: None if fn is None else _interval(fn, draws) for k, fn in fns.items()}
        scores["knn"] = scores["knn"].clipped(0.0, 1.0)  # an accuracy
        domain, frechet = scores.pop("domain"), None
        probe = probe_accuracy(z, yk)
        if source is not None:  # distances between the raw features of the two samples
            domain, frechet = _domain_distance(source.astype(np.float64),
                                               cf.features.astype(np.float64), n_boot, seed)
    return CandidateResult(cand, scores, domain, f.shape[1], cf.gflops,
                           cf.seconds / (cf.shared + 1) + time.perf_counter() - start,
                           cf.from_cache, frechet, prior_of(cand), probe)


def _ranking_fns(f: np.ndarray, p: np.ndarray | None, yk: np.ndarray) -> dict:
    """{score: (on a half-sample's rows, on the whole sample)} for every ranking score in the
    registry; None where the candidate lacks what the score needs (a source head)."""
    given = {"features": f, "source_probs": p,
             "source_labels": None if p is None else p.argmax(1)}
    fns: dict[str, tuple | None] = {}
    for name, info in ranking_scores().items():
        x = given[info.needs]
        if x is None:
            fns[name] = None
        elif info.on_rows is not None:  # a shortcut that scores a subset of rows directly
            fns[name] = (partial(info.on_rows, x, yk),
                         partial(info.on_rows, x, yk, np.arange(len(yk))))
        else:
            fns[name] = (lambda idx, x=x, fn=info.fn: fn(x[idx], yk[idx]),
                         partial(info.fn, x, yk))
    return fns


def _one_blas_thread():
    """One BLAS thread for the scores' small decompositions: nearly as fast idle, far faster
    on a shared 2-core machine (eigh of 1000 x 1000: 0.2 s, vs 0.5-0.7 s on two threads while
    another job holds a core). Uses threadpoolctl (scikit-learn's) when installed."""
    try:  # deferred on purpose: an optional dependency (scikit-learn brings it)
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def resamples(y: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row indices of `n_boot` random halves of the sample (each class halved, rounded up,
    without replacement), the same for every candidate with the same labels and seed. Their
    spread estimates the score's sampling spread at full size (delete-d jackknife, d = n/2;
    Shao and Wu 1989). Not a with-replacement bootstrap: duplicated rows look noise-free and
    inflate LogME (0.44 on 1,000 animal-mnist images -> 4.7 on bootstrap resamples)."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    return [np.sort(np.concatenate([rng.choice(g, size=max(1, -(-len(g) // 2)), replace=False)
                                    for g in groups])) for _ in range(int(n_boot))]


def _interval(fns, draws) -> Interval:
    """The whole-sample value +- 1.96 sd of the half-sample values (a 95 % interval; their
    level drifts with the sample size, their spread is what counts)."""
    on_rows, on_all = fns
    value, half = float(on_all()), 1.96 * float(np.std([on_rows(i) for i in draws], ddof=1))
    return Interval(value, value - half, value + half)


def _domain_distance(src: np.ndarray, target: np.ndarray, n_boot: int, seed: int):
    """MMD (its interval from random halves of both samples) and the Fréchet distance between
    a candidate's features of the source sample and of the target sample."""
    rng = np.random.default_rng(seed)
    halves = [(rng.permutation(len(src))[:-(-len(src) // 2)],
               rng.permutation(len(target))[:-(-len(target) // 2)]) for _ in range(int(n_boot))]
    fns = (lambda ij: mmd(src[ij[0]], target[ij[1]], seed=seed),
           lambda: mmd(src, target, seed=seed))
    return _interval(fns, halves), frechet_distance(src, target)


def order(results: list[CandidateResult], by: str) -> list[CandidateResult]:
    """Best first by the value of `by` (all scores here are higher-is-better); N/A last."""
    return sorted(results, key=lambda r: (r.scores[by] is None,
                                          -(r.scores[by].value if r.scores[by] else 0.0)))


def control_notes(result: RankResult) -> list[str]:
    """Warnings when the random-init control is not last or not clearly beaten."""
    scored = [r for r in result.results if r.scores[result.by] is not None]
    controls = [r for r in scored if r.candidate.random]
    real = [r for r in scored if r.candidate.kind not in ("control", "untrained")]
    notes = []
    for c in controls:
        below = [r.name for r in real if r.scores[result.by].value <= c.scores[result.by].value]
        if below:
            notes.append(f"warning: the random-init control {c.name} scores at least as high as "
                         f"{', '.join(below)}: their features carry no more label information "
                         "than random weights here")
        if real and real[0].scores[result.by].lo <= c.scores[result.by].hi:
            notes.append(f"warning: the best candidate {real[0].name} is not clearly above the "
                         f"random-init control (their 95% intervals overlap)")
    return notes


def format_table(result: RankResult) -> str:
    by = result.by
    head = (f"ranked by {SCORE_NAMES[by]} on {result.n_examples} examples "
            f"(at most {result.max_per_class} per class); [95% interval from {result.n_boot} "
            "random class-stratified halves]; all four scores: higher is better")
    cols = [f"{SCORE_NAMES[k]} ↑" + (" (rank)" if k == by else "") for k in SCORE_NAMES]
    header = (f"{'#':>2}  {'candidate':<30} {'kind':<10} {'dim':>5} {'GFLOPs':>6}  "
              + "  ".join(f"{c:<24}" for c in cols) + f"  {DOMAIN_LABELS[result.domain_method]}")
    lines = [head, header, "-" * len(header)]
    for i, r in enumerate(result.results, 1):
        cells = "  ".join(f"{str(r.scores[k]) if r.scores[k] else 'n/a':<24}" for k in SCORE_NAMES)
        dom = str(r.domain) if r.domain else "n/a"
        if r.frechet is not None:
            dom += f"  frechet {r.frechet:.3g}"
        lines.append(f"{i:>2}  {r.name[:30]:<30} {r.candidate.kind:<10} {r.dim:>5} "
                     f"{r.gflops:>6.2f}  {cells}  {dom}")
    lines.append(DOMAIN_NOTES[result.domain_method])
    return "\n".join(lines + [""] + format_controls(result, SCORE_NAMES) + result.notes)
