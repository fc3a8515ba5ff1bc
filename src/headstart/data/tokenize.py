"""Text pre-processing: the encoder's own tokenizer, and windows for texts longer than the
encoder's window. A text of any length becomes consecutive windows of at most `size` tokens
(special tokens included); the backbone pools them into one embedding. With `truncate` only
the first window is kept, and the caller says how many texts lost tokens."""
from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..exceptions import WeightsError
from ..safeio import guarded

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


def quiet_transformers() -> None:
    """transformers' logging and progress bars off: headstart says what it does itself."""
    import transformers  # deferred on purpose: a heavy import that image runs never need

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


@functools.lru_cache(maxsize=8)
def load_tokenizer(model_dir: str):
    from transformers import AutoTokenizer  # deferred on purpose: heavy, texts only

    quiet_transformers()
    with guarded(model_dir, "the tokenizer", "the model directory needs a readable "
                 "tokenizer.json or vocab.txt", WeightsError):
        return AutoTokenizer.from_pretrained(model_dir)


@functools.lru_cache(maxsize=8)
def tokenizer_fingerprint(model_dir: str) -> str:
    h = hashlib.blake2b(digest_size=8)
    for name in TOKENIZER_FILES:
        p = Path(model_dir) / name
        if p.is_file():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class TextPreprocess:
    tokenizer_dir: str
    size: int  # tokens per window, special tokens included
    truncate: bool = False
    modality = "text"

    def signature(self) -> str:
        mode = "first-window" if self.truncate else "all-windows"
        return f"windows|{tokenizer_fingerprint(self.tokenizer_dir)}|{self.size}|{mode}"

    @property
    def tokenizer(self):
        return load_tokenizer(self.tokenizer_dir)

    def windows(self, texts: list[str]) -> list[list[list[int]]]:
        """For each text, its windows of token ids, each wrapped in the special tokens."""
        tok = self.tokenizer
        body = self.size - 2
        if body < 1:
            raise WeightsError(f"window of {self.size} tokens is too small")
        ids = tok(list(texts), add_special_tokens=False, truncation=False,
                  return_attention_mask=False, verbose=False)["input_ids"]
        cls, sep = tok.cls_token_id, tok.sep_token_id
        out = []
        for seq in ids:
            chunks = [seq[i:i + body] for i in range(0, max(len(seq), 1), body)]
            if self.truncate:
                chunks = chunks[:1]
            out.append([[cls, *c, sep] for c in chunks])
        return out

    def collate(self, docs: list[list[list[int]]]) -> dict:
        """A batch for TextBackbone.forward from the windows of several documents."""
        ids, mask, doc = flat_windows(docs, self.tokenizer.pad_token_id or 0)
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
                "doc": torch.from_numpy(doc), "n_docs": len(docs)}


def flat_windows(docs: list[list[list[int]]], pad_id: int) -> tuple[np.ndarray, ...]:
    """(input_ids, attention_mask, doc): every window of every document, in order, one per
    row, padded with `pad_id` (mask 0) to the longest; doc[i] is the document of row i. The
    layout of a text batch, for the PyTorch backbone and for an exported graph alike."""
    flat = [(d, w) for d, ws in enumerate(docs) for w in ws]
    length = max(len(w) for _, w in flat)
    ids = np.full((len(flat), length), pad_id, np.int64)
    mask = np.zeros((len(flat), length), np.int64)
    for j, (_, w) in enumerate(flat):
        ids[j, :len(w)] = w
        mask[j, :len(w)] = 1
    return ids, mask, np.array([d for d, _ in flat], np.int64)


def doc_batches(windows: list[list[list[int]]], order: list[int], max_windows: int):
    """Group documents (in the given order) so each batch holds at most max_windows windows
    (a single longer document still forms its own batch)."""
    batch: list[int] = []
    count = 0
    for i in order:
        n = len(windows[i])
        if batch and count + n > max_windows:
            yield batch
            batch, count = [], 0
        batch.append(i)
        count += n
    if batch:
        yield batch
