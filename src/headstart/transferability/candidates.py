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

Features are cached in the FeatureCache like training's: the key holds the backbone's config
name (a cut's name ends in ``@GROUP``), the fingerprint of its weights (so the random control
and each checkpoint have their own entries) and the pre-processing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..backbones import Backbone, create_backbone, get_config, list_backbones
from ..backbones.registry import dummy_input
from ..data.tokenize import TextPreprocess
from ..data.transforms import Preprocess
from ..exceptions import ConfigError, UnknownBackboneError, WeightsError, closest
from ..training.extract import extract_features
from ..training.features import FeatureCache, FeatureExtractor

# the zoo's default per modality (as api.DEFAULT_BACKBONE; transferability may not import api)
DEFAULT_BACKBONE = {"image": "efficientnet_lite0", "text": "minilm_l6"}
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
        if self.random:
            return "control"
        return "cut" if self.cut else ("checkpoint" if self.weights else "pretrained")

    def build(self, *, image_size: int | None = None) -> Backbone:
        """The backbone module (eval mode), cut when asked; image_size applies to images."""
        size = image_size if get_config(self.backbone).modality == "image" else None
        if self.random:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                net = create_backbone(self.backbone, pretrained=False, image_size=size)
        else:
            net = create_backbone(self.backbone, image_size=size, weights=self.weights)
        return (CutBackbone(net, self.cut) if self.cut else net).eval()


# ----------------------------------------------------------------------------- cut backbones

class _Stop(Exception):
    """Raised by the hook on the cut group's last module to end the forward pass early."""

    def __init__(self, output) -> None:
        super().__init__()
        self.output = output[0] if isinstance(output, tuple) else output


def _stop_hook(module, inputs, output):
    raise _Stop(output)


class CutBackbone(Backbone):
    """``base`` up to the end of layer group ``group``. Image features are the global average
    pool of the group's output (of its last module: for `stem` and `top`, before the final
    activation); text features average the group's hidden states over tokens with the
    attention mask, then over each document's windows, L2-normalised as the full encoder's."""

    def __init__(self, base: Backbone, group: str) -> None:
        groups = base.config.layer_groups
        if group not in groups:
            hint = closest(group, list(groups))
            raise ConfigError(f"'{base.config.name}' has no layer group '{group}'"
                              + (f"; did you mean '{hint}'?" if hint else "")
                              + f" Its groups are {', '.join(groups)}.")
        modules = base.group_modules()[group]
        if not modules:
            raise ConfigError(f"layer group '{group}' of '{base.config.name}' has no layers to "
                              f"cut after; pick one of {', '.join(_cuttable(base))}.")
        kept = groups[:groups.index(group) + 1]
        config = replace(base.config, name=f"{base.config.name}@{group}", layer_groups=kept,
                         num_source_classes=0, source_labels="")
        super().__init__(config, base.image_size)
        self.base, self.group = base, group
        self._hook = modules[-1].register_forward_hook(_stop_hook)
        with torch.inference_mode():
            dim = int(self(dummy_input(config, 8 if config.modality == "text" else
                                       base.image_size)).shape[1])
        self.config = replace(config, feature_dim=dim)

    def forward(self, x):
        try:
            self.base(x)
        except _Stop as stop:
            if self.config.modality == "text":
                return pool_tokens(stop.output, x, normalize=getattr(self.base, "normalize", True))
            return stop.output.mean(dim=(2, 3))
        raise RuntimeError(f"layer group '{self.group}' never ran")  # a backbone bug, not user's

    def group_modules(self):
        mods = self.base.group_modules()
        return {g: mods[g] for g in self.config.layer_groups}


def pool_tokens(hidden: torch.Tensor, batch: dict, *, normalize: bool) -> torch.Tensor:
    """(W, L, D) hidden states -> (docs, D): masked mean over each document's tokens (all its
    windows), as TextBackbone.forward pools the last layer."""
    mask, doc = batch["attention_mask"], batch["doc"]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    sums = (hidden * m).sum(1).float()
    n_docs = int(batch.get("n_docs", int(doc.max()) + 1 if len(doc) else 0))
    out = torch.zeros(n_docs, sums.shape[1], dtype=sums.dtype).index_add_(0, doc, sums)
    counts = torch.zeros(n_docs, 1, dtype=sums.dtype).index_add_(0, doc, m.sum(1).float())
    emb = out / counts.clamp_min(1.0)
    return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb


def _cuttable(net_or_groups) -> list[str]:
    """Layer groups with modules, early to late (the groups a cut can end at)."""
    mods = net_or_groups.group_modules()
    return [g for g in net_or_groups.config.layer_groups if mods[g]]


def default_cuts(name: str) -> list[str]:
    """Two earlier groups of a backbone: about 3/4 and 1/2 of the way through its groups
    (efficientnet_lite*: stage6, stage4; minilm_l6: layer4, layer3; tiny_cnn: block1)."""
    groups = list(get_config(name).layer_groups)
    last = len(groups) - 1 if groups[-1] not in ("pooling",) else len(groups) - 2
    picks = sorted({min(max(round(last * f), 1), last - 1) for f in (0.75, 0.5)}, reverse=True)
    return [groups[i] for i in picks if 0 < i < last]


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
                          f"{modality}s; pick a {modality} backbone such as "
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
    head, sep, tail = body.rpartition("@")
    if sep and head and tail and "/" not in tail and "\\" not in tail and not Path(body).exists():
        return head, tail
    return body, None


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
    seconds: float
    from_cache: int
    gflops: float  # per input (image, or full text window)


def preprocess_of(net: Backbone, *, truncate: bool = False):
    c = net.config
    if c.modality == "text":
        return TextPreprocess(c.tokenizer, int(net.image_size), truncate=truncate)
    return Preprocess(int(net.image_size), c.mean, c.std)


def candidate_features(candidate: Candidate, ds, *, image_size: int | None = None,
                       cache: FeatureCache | None = None, engine: str = "auto",
                       truncate: bool = False, skip_bad: bool = False, batch_size: int = 32,
                       progress: bool = True) -> CandidateFeatures:
    """Pooled features of `ds` under the candidate (one view, no flips), and the source head's
    softmax outputs when the candidate keeps a source classifier (not for cuts, and not for
    checkpoints saved without it)."""
    from ..backbones import count_flops

    start = time.perf_counter()
    net = candidate.build(image_size=image_size)
    ex = extract_features(ds, FeatureExtractor(net, engine=engine), preprocess_of(
        net, truncate=truncate), cache=cache, skip_bad=skip_bad, batch_size=batch_size,
        progress=progress, desc=candidate.name)
    feats = np.ascontiguousarray(ex.features[:, 0], np.float32)
    probs = None
    head = net.source_classifier()
    if head is not None and getattr(net, "source_classifier_loaded", True):
        with torch.inference_mode():
            probs = torch.softmax(head.eval()(torch.from_numpy(feats)).double(), 1).numpy()
    gflops = count_flops(net) / 1e9
    return CandidateFeatures(feats, probs, ex.kept, time.perf_counter() - start, ex.from_cache,
                             gflops)
