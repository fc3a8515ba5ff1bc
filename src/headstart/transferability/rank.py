"""Rank candidate source models on the target data before any training, and recommend one.

``rank`` takes a class-stratified sample of the data (about 1,000 examples), extracts each
candidate's features (cached), and scores them: LogME and H-score on the features, LEEP and
NCE on the source head's predictions where the candidate has one (N/A otherwise), and a domain
column. Every score comes with a 95 % bootstrap interval; every candidate is scored on the
same resamples. ``recommend`` turns the ranking into a backbone, a strategy and a depth.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..data.datasets import load_dataset
from ..data.texts import detect_modality
from ..exceptions import ConfigError
from ..training.features import FeatureCache
from ..training.sizing import sample_per_class
from .candidates import Candidate, candidate_features, parse_candidates
from .scores import _fixed_point, _gram_spectrum, _log_evidence, _one_hot
from .scores import hscore, ledoit_wolf, leep, logme, nce
from .similarity import frechet_distance, mmd

TARGET_EXAMPLES = 1000  # default sample: about this many examples in all...
MIN_PER_CLASS = 5  # ...and at least this many per class
SCORE_NAMES = {"logme": "LogME", "hscore": "H-score", "leep": "LEEP", "nce": "NCE"}
DOMAIN_LABELS = {
    "msp": "src-conf ↑*", "mmd": "MMD ↓*", "none": "domain*"}
DOMAIN_NOTES = {
    "msp": "* src-conf: mean max-softmax probability of the candidate's source head on this "
           "data, an out-of-domain proxy (no sample of the source domain ships; higher = closer "
           "to the source domain; pass source_sample= for a feature-distribution distance)",
    "mmd": "* MMD: squared kernel MMD between the candidate's features of source_sample and of "
           "this data (lower = closer); frechet: Fréchet distance between their Gaussian fits",
    "none": "* domain: n/a (no source head and no source_sample given)"}


@dataclass(frozen=True)
class Interval:
    value: float  # on the whole sample
    lo: float  # 2.5th percentile of the bootstrap replicates
    hi: float  # 97.5th percentile

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


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
    replicates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

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

    def position(self, name: str) -> int:
        """1-based rank of a candidate by its table name."""
        return 1 + [r.name for r in self.results].index(name)

    def to_dict(self) -> dict:
        rows = [{"rank": i, "candidate": r.name, "kind": r.candidate.kind, "dim": r.dim,
                 "gflops": round(r.gflops, 3), "seconds": round(r.seconds, 2),
                 **{k: (None if v is None else vars(v)) for k, v in r.scores.items()},
                 "domain": None if r.domain is None else vars(r.domain), "frechet": r.frechet}
                for i, r in enumerate(self.results, 1)]
        return {"by": self.by, "modality": self.modality, "examples": self.n_examples,
                "per_class": self.per_class, "domain": self.domain_method,
                "n_boot": self.n_boot, "seconds": round(self.seconds, 2), "notes": self.notes,
                "candidates": rows}


def rank(data, *, candidates="all", labels=None, max_per_class: int | None = None,
         n_boot: int = 20, seed: int = 0, by: str = "logme", image_size: int | None = None,
         source_sample=None, truncate: bool = False, text_options=None, skip_bad: bool = False,
         engine: str = "auto", cache: bool = True, progress: bool = True,
         log: Callable[[str], None] = print) -> RankResult:
    """Score each candidate (see candidates.py for the spec syntax) on a stratified sample of at
    most `max_per_class` examples per class (default: about 1,000 in all, at least 5 per class).
    `image_size`: pixels for every image candidate (default: each backbone's native size).
    `source_sample`: data from the source domain (a folder, a dataset, or a list of images or
    texts) for an MMD/Fréchet domain column instead of the source-head proxy."""
    start = time.perf_counter()
    if by not in SCORE_NAMES:
        raise ConfigError(f"cannot rank by '{by}'; choose one of {', '.join(SCORE_NAMES)}")
    if int(n_boot) < 2:
        raise ConfigError(f"n_boot must be at least 2; got {n_boot}.")
    modality = detect_modality(data, labels)
    ds = load_dataset(data, labels, skip_bad=skip_bad, modality=modality,
                      text_options=text_options)
    cands = parse_candidates(candidates, modality, seed=seed)
    per_class = _per_class(max_per_class, len(ds.classes))
    sub = ds.subset(sample_per_class(ds.labels, per_class, seed))
    y = np.array([ds.classes.index(v) for v in sub.labels])
    source = _source(source_sample, modality, len(sub), seed)
    feature_kw = dict(image_size=image_size, cache=FeatureCache() if cache else None,
                      engine=engine, truncate=truncate, skip_bad=skip_bad, progress=progress)
    log(f"ranking {len(cands)} candidate(s) on {len(sub)} of {len(ds)} {ds.unit} "
        f"({len(ds.classes)} classes, at most {per_class} per class)")
    results = []
    for i, cand in enumerate(cands, 1):
        r = score_candidate(cand, sub, y, source=source, n_boot=n_boot, seed=seed, **feature_kw)
        shown = r.scores[by] if r.scores[by] is not None else "n/a"
        log(f"[{i}/{len(cands)}] {cand.name}: {r.dim}-d, {SCORE_NAMES[by]} {shown} "
            f"({r.seconds:.1f} s, {r.from_cache} cached)")
        results.append(r)
    method = "mmd" if source is not None else (
        "msp" if any(r.domain is not None for r in results) else "none")
    out = RankResult(order(results, by), by, modality, len(sub), ds.counts(), per_class,
                     method, int(n_boot), time.perf_counter() - start)
    out.notes = control_notes(out)
    for note in out.notes:
        log(note)
    return out


def _per_class(max_per_class, n_classes: int) -> int:
    if max_per_class is None:
        return max(MIN_PER_CLASS, -(-TARGET_EXAMPLES // n_classes))
    if int(max_per_class) < 2:
        raise ConfigError(f"max_per_class must be at least 2; got {max_per_class}.")
    return int(max_per_class)


def _source(source_sample, modality: str, rows: int, seed: int):
    if source_sample is None:
        return None
    if isinstance(source_sample, (list, tuple)):
        source_sample = (list(source_sample), ["source"] * len(source_sample))
        ds = load_dataset(*source_sample, modality=modality, min_classes=1)
    else:
        ds = load_dataset(source_sample, modality=modality, min_classes=1)
    keep = np.random.default_rng(seed).permutation(len(ds))[:rows]
    return ds.subset(sorted(keep.tolist()))


# ----------------------------------------------------------------------------- scoring

def score_candidate(cand: Candidate, sub, y: np.ndarray, *, source=None, n_boot: int = 20,
                    seed: int = 0, **feature_kw) -> CandidateResult:
    """Features of the sample under `cand`, every score with its bootstrap interval."""
    start = time.perf_counter()
    cf = candidate_features(cand, sub, **feature_kw)
    yk = np.unique(y[cf.kept], return_inverse=True)[1]
    f = cf.features.astype(np.float64)
    draws = resamples(yk, n_boot, seed)
    fns: dict[str, Callable | None] = {
        "logme": (lambda idx: _logme_rows(f, yk, idx), logme(f, yk)),
        "hscore": (lambda idx: _hscore_rows(f, yk, idx), hscore(f, yk)),
        "leep": None, "nce": None}
    domain_fn = None
    if cf.source_probs is not None:
        p, z = cf.source_probs, cf.source_probs.argmax(1)
        fns["leep"] = (lambda idx: leep(p[idx], yk[idx]), leep(p, yk))
        fns["nce"] = (lambda idx: nce(z[idx], yk[idx]), nce(z, yk))
        msp = p.max(1)
        domain_fn = (lambda idx: float(msp[idx].mean()), float(msp.mean()))
    scores, reps = {}, {}
    for name, pair in fns.items():
        scores[name], reps[name] = (None, None) if pair is None else _interval(pair, draws)
    domain, frechet = (_interval(domain_fn, draws)[0] if domain_fn else None), None
    if source is not None:
        domain, frechet = _domain_distance(cand, source, f, n_boot, seed, feature_kw)
    return CandidateResult(cand, scores, domain, f.shape[1], cf.gflops,
                           time.perf_counter() - start, cf.from_cache, frechet,
                           {k: v for k, v in reps.items() if v is not None})


def resamples(y: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row indices of `n_boot` class-stratified bootstrap resamples (every class keeps its
    count), the same for every candidate scored with the same labels and seed."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    return [np.concatenate([rng.choice(g, size=len(g)) for g in groups])
            for _ in range(int(n_boot))]


def _interval(pair, draws) -> tuple[Interval, np.ndarray]:
    fn, value = pair
    reps = np.array([fn(idx) for idx in draws])
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return Interval(float(value), float(lo), float(hi)), reps


def _logme_rows(f: np.ndarray, y: np.ndarray, idx: np.ndarray) -> float:
    """logme(f[idx], y[idx]) computed on the distinct rows, each scaled by the square root of
    its count: F'F, F'Y and Y'Y are unchanged, so the evidence is the same, and the Gram
    matrix shrinks to the ~63 % of rows a bootstrap resample holds once."""
    rows, counts = np.unique(idx, return_counts=True)
    w = np.sqrt(counts.astype(np.float64))[:, None]
    num_classes = int(y.max()) + 1
    targets = _one_hot(y[rows], num_classes) * w
    sigma, proj = _gram_spectrum(f[rows] * w, targets)
    n, d = len(idx), f.shape[1]
    yy = np.bincount(y[idx], minlength=num_classes).astype(np.float64)
    alpha, beta = _fixed_point(sigma, proj, yy, n, tol=1e-8, max_iter=1000)
    return float(np.mean(_log_evidence(alpha, beta, sigma, proj, yy, n, d)) / n)


def _hscore_rows(f: np.ndarray, y: np.ndarray, idx: np.ndarray) -> float:
    """hscore(f[idx], y[idx]) (shrinkage version): tr(cov^-1 (1-a) cov(E[f|y])) equals
    (1-a)/n sum_k n_k d_k' cov^-1 d_k with d_k the centred class means, so one solve with a
    column per class replaces the (d, d) one."""
    x, yi = f[idx], y[idx]
    cov, a = ledoit_wolf(x)
    counts = np.bincount(yi, minlength=int(y.max()) + 1).astype(np.float64)
    present = counts > 0
    means = (_one_hot(yi, len(counts)).T @ x)[present] / counts[present, None]
    dev = means - x.mean(0)
    sol = np.linalg.solve(cov, dev.T)
    return float((1 - a) / len(x) * np.sum(counts[present] * np.sum(dev.T * sol, axis=0)))


def _domain_distance(cand, source, target: np.ndarray, n_boot, seed, feature_kw):
    """MMD (with an interval from resampling each sample) and the Fréchet distance between the
    candidate's features of the source sample and of the target sample."""
    src = candidate_features(cand, source, **feature_kw).features.astype(np.float64)
    rng = np.random.default_rng(seed)
    reps = [mmd(src[rng.integers(0, len(src), len(src))],
                target[rng.integers(0, len(target), len(target))], seed=seed)
            for _ in range(int(n_boot))]
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return Interval(mmd(src, target, seed=seed), float(lo), float(hi)), \
        frechet_distance(src, target)


def order(results: list[CandidateResult], by: str) -> list[CandidateResult]:
    """Best first by the value of `by` (all scores here are higher-is-better); N/A last."""
    return sorted(results, key=lambda r: (r.scores[by] is None,
                                          -(r.scores[by].value if r.scores[by] else 0.0)))


def control_notes(result: RankResult) -> list[str]:
    """Warnings when the random-init control is not last or not clearly beaten."""
    scored = [r for r in result.results if r.scores[result.by] is not None]
    controls = [r for r in scored if r.candidate.random]
    real = [r for r in scored if not r.candidate.random]
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
            f"(at most {result.max_per_class} per class); [95% bootstrap interval over "
            f"{result.n_boot} class-stratified resamples]; all four scores: higher is better")
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
    return "\n".join(lines + result.notes)


# ----------------------------------------------------------------------------- recommendation

SMALL_PER_CLASS = 100  # below: a linear probe on frozen features (when the domain is near)
LARGE_PER_CLASS = 1000  # from here: fine-tune every group


@dataclass(frozen=True)
class Recommendation:
    """What `headstart train --backbone auto` needs: TrainConfig's backbone, weights, strategy
    and unfreeze (top N layer groups, or "all"; ignored by linear_probe)."""
    backbone: str
    weights: str | None
    strategy: str  # linear_probe | fine_tune
    unfreeze: str
    reason: str
    candidate: str  # the table name of the chosen candidate
    by: str  # the score that chose it

    def train_options(self) -> dict:
        return {"backbone": self.backbone, "weights": self.weights, "strategy": self.strategy,
                "unfreeze": self.unfreeze}

    def __str__(self) -> str:
        depth = "" if self.strategy == "linear_probe" else f" --unfreeze {self.unfreeze}"
        weights = f" --weights {self.weights}" if self.weights else ""
        return (f"recommendation: --backbone {self.backbone}{weights} --strategy "
                f"{self.strategy}{depth} ({self.reason})")


def recommend(data, *, labels=None, log: Callable[[str], None] = print,
              **rank_options) -> Recommendation:
    """The best candidate by the ranking's score and how to train it, with the reason logged on
    one line. `data` is a RankResult, or data to `rank` first (with `rank_options`)."""
    result = data if isinstance(data, RankResult) else rank(data, labels=labels, log=log,
                                                             **rank_options)
    rec = decide(result)
    log(str(rec))
    return rec


def decide(result: RankResult) -> Recommendation:
    """Pick the best real (not control) candidate; linear probe or fine-tune from the data per
    class and from whether an earlier cut of the same network scores close to or above the
    whole network (its late layers are specific to the source task: a far domain)."""
    by = result.by
    real = [r for r in result.results if not r.candidate.random and r.scores[by] is not None]
    if not real:
        raise ConfigError(f"no candidate besides the random control has a {SCORE_NAMES[by]} "
                          "score; add pre-trained candidates or rank by logme")
    best, c = real[0], real[0].candidate
    per_class = int(np.median(list(result.per_class.values())))
    groups = _weighted_groups(c.backbone)
    opts = dict(candidate=best.name, by=by, backbone=c.backbone, weights=c.weights)
    score = f"{SCORE_NAMES[by]} {best.scores[by].value:.3f}"
    control = next((r for r in result.results if r.candidate.random and r.scores[by]), None)
    if control and control.scores[by].hi >= best.scores[by].lo:
        return Recommendation(strategy="fine_tune", unfreeze="all", reason=(
            f"{best.name} ({score}) is not clearly above random weights "
            f"({control.scores[by].value:.3f}): little to transfer, fine-tune everything and "
            "check against scratch with `headstart compare`"), **opts)
    cut = _close_cut(result, best)
    if cut is None:
        if per_class < SMALL_PER_CLASS:
            return Recommendation(strategy="linear_probe", unfreeze="all", reason=(
                f"best {score}; no earlier cut comes close, so its last layers suit this data; "
                f"{per_class} examples per class: a linear probe on frozen features"), **opts)
        deep = per_class >= LARGE_PER_CLASS
        return Recommendation(strategy="fine_tune", unfreeze="all" if deep else str(
            _top_count(groups, c.backbone, 2)), reason=(
            f"best {score}; no earlier cut comes close (near domain); {per_class} examples per "
            f"class: fine-tune {'every group' if deep else 'the top 2 layer groups'}"), **opts)
    after = groups[groups.index(cut.candidate.cut) + 1:]
    deep = per_class >= LARGE_PER_CLASS or len(after) >= len(groups) - 1
    n = "all" if deep else str(_top_count(groups, c.backbone, len(after)))
    how = "close to" if cut is not best else "above"
    return Recommendation(strategy="fine_tune", unfreeze=n, reason=(
        f"{cut.name} scores {how} the whole network ({cut.scores[by].value:.3f} vs "
        f"{_full_value(result, best)}): its later layers are specific to the source task (a "
        f"far domain); {per_class} examples per class: fine-tune "
        f"{'every group' if deep else 'the groups after ' + cut.candidate.cut}"),
        **(opts | {"candidate": cut.name}))


def _same_network(a: Candidate, b: Candidate) -> bool:
    return (a.backbone, a.weights, a.random) == (b.backbone, b.weights, b.random)


def _close_cut(result: RankResult, best: CandidateResult) -> CandidateResult | None:
    """The earliest cut of best's network within half the whole network's interval width of it
    (or above it); best itself when best is a cut."""
    if best.candidate.cut:
        return best
    by, v = result.by, best.scores[result.by]
    cuts = [r for r in result.results if r.candidate.cut and r.scores[by] is not None
            and _same_network(r.candidate, best.candidate)
            and r.scores[by].value >= v.value - (v.hi - v.lo) / 2]
    groups = _weighted_groups(best.candidate.backbone)
    return min(cuts, key=lambda r: groups.index(r.candidate.cut), default=None)


def _full_value(result: RankResult, best: CandidateResult) -> str:
    full = next((r for r in result.results if not r.candidate.cut
                 and _same_network(r.candidate, best.candidate)), None)
    return f"{full.scores[result.by].value:.3f}" if full and full.scores[result.by] else "n/a"


def _weighted_groups(backbone: str) -> list[str]:
    """Layer groups early to late (a text encoder's weightless pooling group left out)."""
    from ..backbones import get_config
    return [g for g in get_config(backbone).layer_groups if g != "pooling"]


def _top_count(weighted: list[str], backbone: str, k: int) -> int:
    """TrainConfig.unfreeze counts groups from the end, weightless ones included: the count
    that trains the last `k` weighted groups."""
    from ..backbones import get_config
    return k + len(get_config(backbone).layer_groups) - len(weighted)
