"""Candidate source models for ranking, and how their features of the target data are obtained.

A candidate is a named backbone, optionally cut at an earlier layer group, loaded with user
weights, or re-initialised at random (the control). As a string (``--candidates`` takes a
comma list of these)::

    efficientnet_lite0                       a backbone of the zoo (`headstart models`)
    efficientnet_lite0@stage5                the same, cut after layer group stage5: features
                                             are the global average pool of that group's output
    minilm_l6@layer3                         text: mean over tokens of layer 3's hidden states
    random:efficientnet_lite0                same architecture, random init (fixed seed): the
                                             control every real source must beat
    runs/cats  or  /path/ckpt.safetensors    a user checkpoint: a run directory, or a weights file
                                             whose architecture is read from its run's config.yaml
                                             or found by trying the zoo's architectures
    efficientnet_lite1=/path/ckpt.pt         a checkpoint for a named architecture
    /path/to/hf-model-dir                    a Hugging Face / sentence-transformers directory
    all                                      the defaults (see `default_candidates`)

``@GROUP`` combines with all of them (``random:minilm_l6@layer2``, ``runs/cats@stage6``).

Candidates of one network (a backbone and its cuts) share one forward pass: the cuts tap it
on the way (forward hooks on each group's last module), and without the whole network among
them it stops after the deepest cut (the hook raises). Features are cached in the
FeatureCache like training's, every candidate included: the key holds the pass's config name
(``efficientnet_lite0``, or ``efficientnet_lite0@stage4+stage6+out`` for a tapped pass), the
fingerprint of the weights (the random control and each checkpoint have their own) and the
pre-processing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backbones import Backbone, create_backbone, get_config, list_backbones
from ..backbones.cut import CutBackbone, default_cuts, one_thread, split_cut
from ..backbones.registry import DEFAULT_BACKBONE
from ..data.tokenize import TextPreprocess
from ..data.transforms import Preprocess
from ..exceptions import ConfigError, UnknownBackboneError, WeightsError, closest
from ..training.extract import extract_features
from ..training.features import FeatureCache, FeatureExtractor

_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class Candidate:
    """One source model to score. ``backbone`` is a registry name or a model directory."""
    name: str  # as shown in the table
    backbone: str
    cut: str | None = None  # layer group whose pooled output are the features
    weights: str | None = None  # user checkpoint (file, folder or run directory)
    random: bool = False  # same architecture, random init: the control
    seed: int = 0  # the control's init seed

    @property
    def kind(self) -> str:
        """control, cut, checkpoint, pretrained, or untrained (a fixed-init test backbone)."""
        if self.random:
            return "control"
        if self.cut or self.weights:
            return "cut" if self.cut else "checkpoint"
        return "untrained" if get_config(self.backbone).pretraining.startswith("none") \
            else "pretrained"

    @property
    def network(self) -> tuple:
        """Candidates with the same network share one forward pass (cuts tap it on the way)."""
        return self.backbone, self.weights, self.random, self.seed if self.random else 0

    def build_network(self, *, image_size: int | None = None) -> Backbone:
        """The whole network (eval mode), uncut; image_size applies to image backbones."""
        size = image_size if get_config(self.backbone).modality == "image" else None
        if self.random:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                net = create_backbone(self.backbone, pretrained=False, image_size=size)
        else:
            net = create_backbone(self.backbone, image_size=size, weights=self.weights)
        return net.eval()

    def build(self, *, image_size: int | None = None) -> Backbone:
        net = self.build_network(image_size=image_size)
        return CutBackbone(net, (self.cut,)).eval() if self.cut else net


# ----------------------------------------------------------------------------- parsing

def default_candidates(modality: str, *, seed: int = 0) -> list[Candidate]:
    """Every installed backbone of the modality (tiny_* test backbones excepted), two earlier
    cuts of the default backbone, and the random-init control of the default backbone."""
    out = [Candidate(c.name, c.name) for c in list_backbones() if _is_zoo_default(c, modality)]
    base = DEFAULT_BACKBONE[modality]
    if not any(c.backbone == base for c in out):
        raise ConfigError(f"the default {modality} backbone '{base}' is not installed; name the "
                          "candidates with --candidates (see `headstart models`)")
    out += [Candidate(f"{base}@{g}", base, cut=g) for g in default_cuts(base)]
    out.append(Candidate(f"random:{base}", base, random=True, seed=seed))
    return out


def _is_zoo_default(c, modality: str) -> bool:
    """Installed, of the modality, not a test backbone, not a model directory used by path."""
    return (c.modality == modality and not c.name.startswith("tiny_") and c.weights_installed()
            and not Path(c.name).is_absolute())


def parse_candidates(spec, modality: str, *, seed: int = 0) -> list[Candidate]:
    """Candidates from "all", a comma list of specs (module docstring), or a list of specs and
    Candidate objects. Duplicates are dropped; at least one candidate is needed."""
    items = spec.split(",") if isinstance(spec, str) else list(spec or ["all"])
    out: list[Candidate] = []
    for item in items:
        if isinstance(item, Candidate):
            out.append(item)
        elif str(item).strip().lower() == "all":
            out += default_candidates(modality, seed=seed)
        elif str(item).strip():
            out.append(parse_candidate(str(item).strip(), modality, seed=seed))
    unique = list({(c.backbone, c.cut, c.weights, c.random): c for c in reversed(out)}.values())
    unique.reverse()
    if not unique:
        raise ConfigError(f"no candidates in {spec!r}; pass 'all' or names such as "
                          f"'{DEFAULT_BACKBONE[modality]}' (see `headstart models`)")
    return unique


def parse_candidate(text: str, modality: str, *, seed: int = 0) -> Candidate:
    """One candidate spec; unknown names raise the registry's UnknownBackboneError."""
    body, random = (text[len("random:"):], True) if text.startswith("random:") else (text, False)
    body, cut = _split_cut(body)
    arch, weights = _split_weights(body, modality)
    cfg = get_config(arch)
    if cfg.modality != modality:
        raise ConfigError(f"candidate '{text}' reads {cfg.modality}s but the data holds "
                          f"{modality}s; pick {'an' if modality == 'image' else 'a'} {modality} "
                          "backbone such as "
                          f"'{DEFAULT_BACKBONE[modality]}' (see `headstart models`)")
    if random and weights:
        raise ConfigError(f"candidate '{text}': random: re-initialises an architecture, it takes "
                          f"no checkpoint; write random:{arch}")
    if cut is not None and cut not in cfg.layer_groups:
        hint = closest(cut, list(cfg.layer_groups))
        raise ConfigError(f"candidate '{text}': '{arch}' has no layer group '{cut}'"
                          + (f"; did you mean '@{hint}'?" if hint else "")
                          + f" Its groups are {', '.join(cfg.layer_groups)}.")
    return Candidate(text, arch, cut=cut, weights=weights, random=random, seed=seed)


def _split_cut(body: str) -> tuple[str, str | None]:
    return (body, None) if Path(body).exists() else split_cut(body)


def _split_weights(body: str, modality: str) -> tuple[str, str | None]:
    """(architecture, weights or None) of a name, a model directory, ARCH=PATH, or a path."""
    arch, sep, path = body.partition("=")
    if sep and arch and path and not Path(body).exists():
        get_config(arch)  # an unknown architecture name: the registry's error
        if not Path(path).expanduser().exists():
            raise WeightsError(f"{path}: no such checkpoint file or folder; check the path "
                               f"after '{arch}='")
        return arch, path
    p = Path(body).expanduser()
    if not p.exists():
        if body.endswith(_WEIGHT_SUFFIXES) or "/" in body or "\\" in body:
            raise WeightsError(f"{body}: no such checkpoint file or folder; check the path")
        return body, None  # a registry name (get_config says if it is unknown)
    if p.is_dir() and (p / "config.json").is_file():
        return str(p), None  # a model directory is a backbone by itself
    return checkpoint_arch(p, modality), str(p)


def checkpoint_arch(path: Path, modality: str) -> str:
    """The architecture of a checkpoint: from its run's config.yaml when it has one, else the
    first installed architecture of the modality (default first) whose tensors all fit."""
    run = path if path.is_dir() else path.parent
    if (run / "config.yaml").is_file():
        import yaml
        stored = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
        if stored.get("backbone"):
            return str(stored["backbone"])
    from ..backbones import load_weights
    from ..exceptions import WeightsMismatchError

    names = [DEFAULT_BACKBONE[modality]] + [c.name for c in list_backbones()
                                            if c.modality == modality and c.weights_installed()]
    for name in dict.fromkeys(names):
        try:
            load_weights(create_backbone(name, pretrained=False), path)
            return name
        except (WeightsMismatchError, UnknownBackboneError):
            continue
    raise WeightsError(f"{path}: its tensors fit none of the installed {modality} architectures "
                       f"({', '.join(dict.fromkeys(names))}); name it as ARCH={path}")


# ----------------------------------------------------------------------------- features

@dataclass
class CandidateFeatures:
    features: np.ndarray  # (n_kept, dim) float32
    source_probs: np.ndarray | None  # (n_kept, source classes) softmax, when a source head fits
    kept: list[int]  # indices into the dataset
    seconds: float  # of the forward pass this candidate shared with `shared` others
    from_cache: int
    gflops: float  # per input (image, or full text window) of this candidate alone
    shared: int = 0


def by_network(cands: list[Candidate]) -> list[list[Candidate]]:
    """Candidates grouped by network, in order of first appearance (one forward pass each)."""
    groups: dict[tuple, list[Candidate]] = {}
    for c in cands:
        groups.setdefault(c.network, []).append(c)
    return list(groups.values())


def preprocess_of(net: Backbone, *, truncate: bool = False):
    c = net.config
    if c.modality == "text":
        return TextPreprocess(c.tokenizer, int(net.image_size), truncate=truncate)
    return Preprocess(int(net.image_size), c.mean, c.std)


def network_features(cands: list[Candidate], ds, *, image_size: int | None = None,
                     cache: FeatureCache | None = None, engine: str = "auto",
                     truncate: bool = False, skip_bad: bool = False, batch_size: int = 32,
                     progress: bool = True) -> list[CandidateFeatures]:
    """Features of `ds` (one view, no flips) for candidates of one network, in one forward
    pass: cuts tap it on the way, and it stops after the deepest cut when no candidate needs
    the whole network. The whole network's candidate also gets the source head's softmax
    outputs when it keeps a source classifier (checkpoints saved without one do not)."""
    if len({c.network for c in cands}) != 1:
        raise ConfigError("network_features takes candidates of one network; group them by "
                          "Candidate.network")
    start = time.perf_counter()
    net = cands[0].build_network(image_size=image_size)
    cuts = tuple(c.cut for c in cands if c.cut)
    full = any(c.cut is None for c in cands)
    run = CutBackbone(net, cuts, keep_output=full).eval() if cuts else net
    ex = extract_features(ds, FeatureExtractor(run, engine=engine), preprocess_of(
        run, truncate=truncate), cache=cache, skip_bad=skip_bad, batch_size=batch_size,
        progress=progress, desc=cands[0].name if len(cands) == 1 else run.config.name)
    feats = ex.features[:, 0]
    seconds = time.perf_counter() - start
    if cuts:
        run.remove_hooks()
    parts = np.split(feats, np.cumsum(run.dims)[:-1], axis=1) if cuts else [feats]
    blocks = dict(zip(run.groups, parts)) if cuts else {}
    out = []
    for c in cands:
        f = np.ascontiguousarray(blocks[c.cut] if c.cut else parts[-1], np.float32)
        probs = None if c.cut else _source_probs(net, f)
        out.append(CandidateFeatures(f, probs, ex.kept, seconds, ex.from_cache,
                                     _gflops(net, c.cut), len(cands) - 1))
    return out


def _source_probs(net: Backbone, feats: np.ndarray) -> np.ndarray | None:
    head = net.source_classifier()
    if head is None or not getattr(net, "source_classifier_loaded", True):
        return None
    with torch.inference_mode():
        return torch.softmax(head.eval()(torch.from_numpy(feats)).double(), 1).numpy()


_GFLOPS: dict[tuple, float] = {}  # (backbone, cut, input size) -> GFLOPs, per process


def _gflops(net: Backbone, cut: str | None) -> float:
    """FLOPs of one input through the candidate (one batch-1 forward pass, remembered)."""
    from ..backbones import count_flops

    key = (net.config.name, cut, net.image_size)
    if key not in _GFLOPS:
        tap = CutBackbone(net, (cut,)) if cut else net
        with one_thread():
            _GFLOPS[key] = count_flops(tap) / 1e9
        if cut:
            tap.remove_hooks()
    return _GFLOPS[key]
