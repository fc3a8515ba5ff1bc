"""Modalities: each kind of data headstart reads (images, texts) is one object that the rest of
the code asks (see base.py). The package imports its members, which register themselves; the
order is the order detection asks them in (texts claim tables by their column names first)."""
from .base import Extracted, Modality, prefetch_map
from .registry import (all_modalities, check_modality, describe_data, detect, fallback, get,
                       load_dataset, of, register, sniff)
from . import text, image  # noqa: E402,F401,I001  (registering; the order matters, see above)

__all__ = ["Extracted", "Modality", "prefetch_map", "all_modalities", "check_modality",
           "describe_data", "detect", "fallback", "get", "load_dataset", "of", "register",
           "sniff"]
