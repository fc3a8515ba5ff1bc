"""The resolved settings of a training run: stored as config.yaml in the run directory."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..data.images import DEFAULT_MAX_PIXELS
from ..exceptions import ConfigError

REFIT_MODES = ("head", "full", "none")


@dataclass
class TrainConfig:
    backbone: str | None = None  # None: efficientnet_lite0 for images, minilm_l6 for texts
    strategy: str = "auto"  # adapt as measured best for the data, guarded by the probe
    epochs: int = 5  # gradient epochs through the backbone (the budget scratch gets too)
    lr: float | None = None  # top learning rate; None = the strategy's default
    unfreeze: str = "all"  # fine_tune: top N layer groups, or all
    # images: auto = also measure earlier layer cuts of the backbone (NAME@GROUP) and keep one
    # where it clearly beats the whole network; none = the whole network
    cut: str = "auto"
    image_size: int | str = "auto"  # pixels, or "auto" = measured on a sample of the data
    batch_size: int = 32
    val_fraction: float = 0.2
    seed: int = 0
    patience: int = 3  # early stopping: epochs without validation improvement
    flip: bool = True  # horizontal flips: augmentation, cached views, test-time averaging
    augment: bool = True  # random crops and colour jitter when fine-tuning
    C: float = 1.0  # inverse L2 strength of the cached-feature head (as in scikit-learn)
    weights: str | None = None  # user weights for the backbone (file, folder or URL)
    skip_bad: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = 0  # DataLoader worker processes for fine-tuning
    precision: str = "auto"  # auto | fp32 | bf16
    channels_last: bool = True
    bn_stats: str = "auto"  # keep | update | auto (keep when starting from pre-trained weights)
    # after validation has done its work, learn from its examples too: head = refit the final
    # closed-form head (linear_probe, contrastive) on training + validation; full = also retrain
    # the whole plan from the start on training + validation for the epochs validation chose;
    # none = keep what was trained on the training split
    refit: str = "head"
    l2sp: float = 0.0  # L2-SP strength alpha (0 = off): pull fine-tuned weights to pre-trained
    text_column: str | None = None  # texts in a table: None = the first of text, sentence, ...
    label_column: str | None = None  # None = the first of label, category, class, topic, ...
    encoding: str = "utf-8"  # text files in another encoding (e.g. cp1252) decode with it
    truncate: bool = False  # texts: keep only the first window (default: pool all windows)
    layers: int | str = 1  # texts: pool the last N layers; auto = measured (1 for images)

    def validate(self) -> "TrainConfig":
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.image_size != "auto":
            try:
                self.image_size = int(self.image_size)
            except (TypeError, ValueError):
                raise ConfigError(f"image_size must be a number of pixels or 'auto', got "
                                  f"{self.image_size!r}") from None
            if not 8 <= self.image_size <= 1024:
                raise ConfigError(f"image_size must be between 8 and 1024, got {self.image_size}")
        if self.bn_stats not in ("auto", "keep", "update"):
            raise ConfigError(f"bn_stats must be auto, keep or update, got {self.bn_stats!r}")
        if not 0 <= self.l2sp < 1e4:
            raise ConfigError(f"l2sp must be 0 (off) or a positive strength such as 0.01, got "
                              f"{self.l2sp}")
        if self.patience < 1:
            raise ConfigError(f"patience must be at least 1, got {self.patience}")
        self.refit = upgrade({"refit": self.refit})["refit"]
        if self.refit not in REFIT_MODES:
            raise ConfigError(f"refit must be one of {', '.join(REFIT_MODES)}, got "
                              f"{self.refit!r}")
        if self.layers != "auto":
            try:
                self.layers = int(self.layers)
            except (TypeError, ValueError):
                raise ConfigError(f"layers must be a number of layers or 'auto', got "
                                  f"{self.layers!r}") from None
            if self.layers < 1:
                raise ConfigError(f"layers must be at least 1, got {self.layers}")
        self.unfreeze = str(self.unfreeze)
        if self.cut not in ("auto", "none"):
            raise ConfigError(f"cut must be auto or none, got {self.cut!r}; to train a "
                              "particular cut, name it as the backbone (e.g. "
                              "--backbone efficientnet_lite0@stage6)")
        return self

    def text_options(self):
        from ..data.texts import TextOptions
        return TextOptions(self.text_column, self.label_column, self.encoding)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in upgrade(d).items() if k in known})


def upgrade(d: dict) -> dict:
    """Stored settings of runs written by earlier versions, in today's terms."""
    if isinstance(d.get("refit"), bool):  # before refit had modes: head refit, or none
        d = {**d, "refit": "head" if d["refit"] else "none"}
    return d
