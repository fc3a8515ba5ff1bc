"""Layer cuts: a backbone ended after one of its layer groups, as a backbone of its own.

``efficientnet_lite0@stage6`` is EfficientNet-Lite0 up to the end of stage 6, its features the
global average pool of that stage's output; ``minilm_l6@layer4`` is MiniLM's first four layers,
mean-pooled over tokens. Early layers of a network trained on another task are often more
general than its last ones (Yosinski et al. 2014), so on a far domain a cut can transfer better
than the whole network; `headstart rank` scores cuts, and `train`, `compare`, `evaluate`,
`predict` and the estimator take them like any backbone.

Two mechanisms:

- ``truncate(base, group)`` ends one network after one group for training and export. A
  backbone that can drop its later modules (``Backbone.truncate_after``) does so: a plain
  forward pass that ONNX exports and whose weights hold only what is used. Any other backbone is
  tapped with a forward hook that stops the pass (eager PyTorch only).
- ``CutBackbone(base, groups, keep_output=...)`` taps several groups of one forward pass at
  once; ranking scores every cut of a network from a single pass this way.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace

import torch

from .. import modalities
from ..exceptions import ConfigError, closest
from .registry import Backbone, BackboneConfig

CUT_MARK = "@"


class _Stop(Exception):
    """Raised by the hook on the deepest tapped group to end the forward pass early."""


@contextlib.contextmanager
def one_thread():
    """Batch-1 probes run on one thread: as fast on an idle machine, and on a loaded one
    (other jobs on the other core) 100x faster than waiting for a second thread per op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_group(base: Backbone, group: str) -> None:
    """A cut must name one of the backbone's groups, and one that holds layers."""
    groups = base.config.layer_groups
    if group not in groups:
        hint = closest(group, list(groups))
        raise ConfigError(f"'{base.config.name}' has no layer group '{group}'"
                          + (f"; did you mean '{hint}'?" if hint else "")
                          + f" Its groups are {', '.join(groups)}.")
    if not base.group_modules()[group]:
        cuttable = [g for g, m in base.group_modules().items() if m]
        raise ConfigError(f"layer group '{group}' of '{base.config.name}' has no layers to "
                          f"cut after; pick one of {', '.join(cuttable)}.")


class CutBackbone(Backbone):
    """``base`` tapped at the end of layer groups ``groups``: features are the pooled output of
    each tapped group (concatenated early to late), then the base's own output when
    ``keep_output``; without it the forward pass stops after the deepest tapped group. Image
    taps are global average pools of the group's last module's output (for `stem` and `top`,
    before the final activation); text taps average the hidden states over tokens with the
    attention mask, then over each document's windows, L2-normalised as the full encoder's."""

    def __init__(self, base: Backbone, groups: tuple[str, ...], *,
                 keep_output: bool = False) -> None:
        order = base.config.layer_groups
        for g in groups:
            check_group(base, g)
        groups = tuple(sorted(set(groups), key=order.index))
        last = order[-1] if keep_output else groups[-1]
        name = base.config.name + CUT_MARK + "+".join(groups) + ("+out" if keep_output else "")
        config = replace(base.config, name=name, layer_groups=order[:order.index(last) + 1],
                         num_source_classes=0, source_labels="", param_count=None, flops=None,
                         cut_sizes=())
        super().__init__(config, base.input_size)
        self.base, self.groups, self.keep_output = base, groups, keep_output
        self.modality = modalities.get(config.modality)
        self._seen: list[torch.Tensor] = []
        mods = base.group_modules()
        self._hooks = [mods[g][-1].register_forward_hook(self._tap(stop=g == groups[-1]
                                                                   and not keep_output))
                       for g in groups]
        was_training = base.training
        base.eval()  # the probe must not move BatchNorm statistics
        with torch.inference_mode(), one_thread():
            probe = self.modality.probe_input(base.input_size)
            self.dims = [int(t.shape[1]) for t in self.parts(probe)]
        base.train(was_training)
        self.config = replace(config, feature_dim=sum(self.dims))

    def _tap(self, *, stop: bool):
        def hook(module, inputs, output):
            self._seen.append(output[0] if isinstance(output, tuple) else output)
            if stop:
                raise _Stop
        return hook

    def parts(self, x) -> list[torch.Tensor]:
        """Pooled features of each tapped group (and of the output), early to late."""
        self._seen = []
        try:
            out = self.base(x)
        except _Stop:
            out = None
        seen, self._seen = self._seen, []
        norm = getattr(self.base, "normalize", True)  # as the whole network pools its output
        pooled = [self.modality.pool(h, x, normalize=norm) for h in seen]
        return pooled + ([out] if self.keep_output else [])

    def forward(self, x) -> torch.Tensor:
        parts = self.parts(x)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def group_modules(self):
        mods = self.base.group_modules()
        return {g: mods[g] for g in self.config.layer_groups}

    def attention_dropout(self, p: float):
        return self.base.attention_dropout(p)

    def token_table(self) -> torch.nn.Parameter | None:
        return self.base.token_table()

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()


def default_cuts(config: BackboneConfig) -> list[str]:
    """Two earlier groups of a backbone: about 3/4 and 1/2 of the way through its groups
    (efficientnet_lite*: stage6, stage4; minilm_l6: layer4, layer3; tiny_cnn: block1)."""
    groups = list(config.layer_groups)
    last = len(groups) - 1 if groups[-1] not in ("pooling",) else len(groups) - 2
    picks = sorted({min(max(round(last * f), 1), last - 1) for f in (0.75, 0.5)}, reverse=True)
    return [groups[i] for i in picks if 0 < i < last]


def split_cut(name: str) -> tuple[str, str | None]:
    """('efficientnet_lite0', 'stage6') from 'efficientnet_lite0@stage6'; (name, None) when
    there is no cut (a path with '@' in a folder name is not a cut)."""
    head, sep, tail = name.rpartition(CUT_MARK)
    if sep and head and tail and "/" not in tail and "\\" not in tail and "+" not in tail:
        return head, tail
    return name, None


def truncate(base: Backbone, group: str) -> Backbone:
    """``base`` ended after ``group``, named NAME@GROUP: its own layers dropped where the
    backbone knows how (plain forward, exportable), else a stopping tap."""
    check_group(base, group)
    name = base.config.name + CUT_MARK + group
    order = base.config.layer_groups
    keep = order[:order.index(group) + 1]
    if "pooling" in order and "pooling" not in keep:  # a text encoder keeps its pooling
        keep = keep + ("pooling",)
    if base.truncate_after(group):
        base.config = replace(base.config, name=name, layer_groups=keep, num_source_classes=0,
                              source_labels="", param_count=None, flops=None,
                              cut_sizes=())
        with torch.inference_mode(), one_thread():
            was = base.training
            base.eval()
            probe = modalities.get(base.config.modality).probe_input(base.input_size)
            dim = int(base(probe).shape[1]) // base.feature_layers
            base.train(was)
        base.config = replace(base.config, feature_dim=dim)
        return base
    cut = CutBackbone(base, (group,))
    cut.config = replace(cut.config, name=name)
    return cut


def describe_cut(base: BackboneConfig, group: str, module: Backbone) -> BackboneConfig:
    """The registry's description of BASE@GROUP, from `module` (BASE truncated after GROUP,
    built once by zoo.py to learn its feature size); its size where BASE records it."""
    parameters, flops = next(((p, f) for g, p, f in base.cut_sizes if g == group), (None, None))
    return replace(module.config, cut_of=base.name, cut=group, factory=None,
                   weights_installed=base.weights_installed, param_count=parameters,
                   flops=flops, description=f"{base.name} up to {group} (a layer cut)")


def check_cut_name(base: BackboneConfig, group: str) -> None:
    if group not in base.layer_groups:
        hint = closest(group, list(base.layer_groups))
        raise ConfigError(f"'{base.name}' has no layer group '{group}'"
                          + (f"; did you mean '{base.name}{CUT_MARK}{hint}'?" if hint else "")
                          + f" Its groups are {', '.join(base.layer_groups)}.")
