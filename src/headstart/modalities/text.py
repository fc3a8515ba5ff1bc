"""Texts: CSV, TSV or JSONL files with text and label columns, folders of class sub-folders of
`.txt` files, or Python lists of strings.

Read by `data/texts.py` and tokenised into windows by `data/tokenize.py`: a text longer than
the encoder's window is split into consecutive windows whose embeddings the backbone pools
(a document's embedding is the mean over all its tokens). The input size is the encoder's
window (nothing is measured or flipped); `--layers auto` measures how many top layers to pool.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import devices
from ..data import shipped
from ..data.folders import inputs_under
from ..data.images import IMAGE_EXTENSIONS, is_image_path, is_regular_file
from ..data.texts import (TABLE_EXTENSIONS, TEXT_COLUMNS, TextDataset, TextOptions,
                          check_not_empty, decode, from_table, load_texts)
from ..data.tokenize import TOKENIZER_FILES, TextPreprocess, doc_batches, flat_windows
from ..exceptions import DataError, HeadstartError
from .base import Extracted, Modality
from .pieces import split_documents
from .registry import register

# Transformers need far smaller steps than CNNs (BERT's own fine-tuning rates are 2e-5..1e-4)
DEFAULT_LR = {"linear_probe": 1e-3, "fine_tune": 1e-4, "gradual": 1e-4, "scratch": 5e-4,
              "contrastive": 2e-5}
# layer-wise rate decay of about 0.8 per layer (ELECTRA's fine-tuning recipe, Clark et al.
# 2020), i.e. about 5x from the top layer down to the embeddings of a 6-layer encoder. A
# CNN-style 100x spread leaves a transformer's lower layers practically frozen.
LR_SPREAD = 5.0
# Pair training, the text default (`auto`, `contrastive`), for 3 epochs where --epochs is not
# given: on dev splits of the training pool (100 per class, never the test), 8 texts per class,
# seeds 0-4, 3 epochs against 5 scored 0.7944 against 0.7860 on BBC headlines (4 of 5 seeds
# better) and 0.9488 against 0.9432 on BBC articles (none worse), in about 0.65x the time
# (README, "Adapting without forgetting")
DEFAULT_EPOCHS = {"contrastive": 3}
PROBE_TOKENS = 8  # the window a layer cut is probed with to learn its feature size
# the tokens (windows x padded length) of one piece of a gradient step: a batch of long
# documents is run in pieces of whole documents of at most this many, its activations' memory
# bounded whatever the texts' length (training/steps.py). Chosen by measurement, README
STEP_TOKENS = 1024
PATH_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".md")


class TextModality(Modality):
    name, plural = "text", "texts"
    size_unit, size_name = "tok", "window"
    default_backbone = "minilm_l6"
    default_lr, lr_spread, default_epochs = DEFAULT_LR, LR_SPREAD, DEFAULT_EPOCHS
    # `auto` tunes the encoder on pairs of examples (SetFit-style; on BBC News it beat
    # fine-tuning at 8 per class and on all articles), mixed with the frozen encoder
    auto_strategy = "contrastive"
    measures_layers = True
    zero_shot = "class_names"  # embed the class names and take the most similar
    quantization = "dynamic"
    request = "texts"

    # -- recognising and reading --------------------------------------------------------------
    def claims_member(self, path: Path) -> bool:
        return path.suffix.lower() == ".txt"

    def claims_data_file(self, path: Path) -> bool:
        return path.suffix.lower() in (".jsonl", ".ndjson")

    def table_claim(self, columns: list[str], cells: list[str]) -> int:
        # a text column (4) outranks every image claim; any other table holds texts (1)
        return 4 if any(c in TEXT_COLUMNS for c in columns) else 1

    def claims_items(self, items: list) -> bool:
        if not items or not all(isinstance(x, str) for x in items):
            return False
        looks_like_files = all(is_image_path(Path(x)) or is_regular_file(x) for x in items
                               if len(x) < 4096 and "\n" not in x)
        return not (looks_like_files and all("\n" not in x for x in items))

    def load(self, data, labels=None, *, skip_bad: bool = False, options=None) -> TextDataset:
        return load_texts(data, labels, skip_bad=skip_bad, options=options)

    def unlabelled(self, inputs: list, who) -> TextDataset:
        inputs = list(inputs)
        bad = [i for i, t in enumerate(inputs) if not isinstance(t, str)]
        if bad:
            raise DataError(f"input {bad[0] + 1} is a {type(inputs[bad[0]]).__name__}, but "
                            f"{who} classifies texts; pass texts as str")
        check_not_empty(inputs, [f"text {i + 1}" for i in range(len(inputs))])
        return TextDataset(inputs, ["?"] * len(inputs))

    def inputs_from_words(self, words, literal, cfg, run) -> tuple[list, list]:
        """Texts from the command line: a .txt file is one text, a table gives its text column,
        anything that looks like a file must be one, anything else is the text itself; then
        the --text values as they are."""
        texts, names = [], []
        for a in words:
            t, n = _word_texts(a, cfg)
            texts += t
            names += n
        check_not_empty(texts, names)
        return texts + list(literal), names + [_shown(t) for t in literal]

    def content_key(self, source) -> str:
        return text_hash(source)

    def write_example(self, source, folder: Path, n: int) -> None:
        (folder / f"{n:05d}.txt").write_text(source, encoding="utf-8")

    def shipped_holdout(self) -> tuple[list, list[str], str]:
        texts, labels, _ = shipped.load_bbc_news()
        _, test = shipped.bbc_split(texts, labels)
        return [texts[i] for i in test], [labels[i] for i in test], "BBC News"

    # -- pre-processing, batches, features ----------------------------------------------------
    def preprocess(self, bcfg, size: int, *, truncate: bool = False) -> TextPreprocess:
        return TextPreprocess(bcfg.tokenizer, int(size), truncate=truncate)

    def describe_inputs(self, sources: list, bcfg, cfg, log) -> None:
        """Say how texts longer than the encoder's window are handled: never silently."""
        pre = self.preprocess(bcfg, cfg.input_size, truncate=cfg.truncate)
        long = count_truncated(pre, sources)
        if not long:
            return
        if pre.truncate:
            log(f"truncating: {long} of {len(sources)} texts are longer than {pre.size} tokens "
                "and keep only their first window (--truncate)")
        else:
            log(f"{long} of {len(sources)} texts are longer than {pre.size} tokens: each is split "
                "into windows whose embeddings are pooled (--truncate keeps only the first)")

    def train_batches(self, split, order, *, batch_size, pairs, pre, augment, seed, epoch,
                      per_pass, workers):
        # pair steps read each text's first window, as SetFit does: the cost of a step does not
        # grow with the length of the texts (the head's embeddings use every window)
        pre = replace(pre, truncate=True) if pairs else pre
        windows = pre.windows([split.ds.sources[i] for i in order])
        starts = range(0, len(order), batch_size)
        return ((pre.collate(windows[s:s + batch_size]),
                 torch.from_numpy(np.asarray(split.y[order[s:s + batch_size]], np.int64)))
                for s in starts), len(starts)

    def step_pieces(self, x, t) -> list[tuple]:
        """The batch's documents in consecutive groups of at most STEP_TOKENS tokens of windows
        (a longer document cut between its windows), each a batch of its own with its padding
        trimmed."""
        return split_documents(x, t, STEP_TOKENS)

    def extract(self, ds, extractor, pre, *, views: int = 1, cache=None, skip_bad: bool = False,
                batch_size: int = 32, progress: bool = True, max_pixels: int | None = None,
                desc: str = "embedding") -> Extracted:
        return extract_texts(ds, extractor, pre, cache=cache, batch_size=batch_size,
                             progress=progress, desc=desc)

    # -- what backbones ask -------------------------------------------------------------------
    def dummy_input(self, size: int, batch: int = 1) -> dict:
        ids = torch.zeros(batch, size, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "doc": torch.arange(batch), "n_docs": batch}

    def probe_input(self, size: int) -> dict:
        return self.dummy_input(PROBE_TOKENS)

    def pool(self, hidden, batch, *, normalize: bool = True) -> torch.Tensor:
        return pool_tokens(hidden, batch, normalize=normalize)

    def flops_unit(self, pre, sources: list, flops: float) -> tuple[float, str]:
        mean = float(np.mean([len(w) for w in pre.windows(sources)]))
        return flops * mean, (f"one text (a full {pre.size}-token window x {mean:.2f} windows "
                              "per text)")

    # -- export and serving -------------------------------------------------------------------
    def export_graph(self, model, bcfg, *, flip: bool) -> nn.Module:
        return TextGraph(model)

    def export_dummy(self, pre) -> tuple:
        """One document of several windows and one short one (tracing needs padding in the
        batch, so that no masking branch is traced away)."""
        body = "hello world " * pre.size
        docs = pre.windows(["hello world", body])[:2]
        return tuple(torch.from_numpy(a) for a in flat_windows(docs, _pad_id(pre)))

    def onnx_inputs(self) -> tuple[list[str], dict, str]:
        axes = {"input_ids": {0: "windows", 1: "tokens"},
                "attention_mask": {0: "windows", 1: "tokens"}, "doc": {0: "windows"}}
        return ["input_ids", "attention_mask", "doc"], axes, "documents"

    def sidecar(self, pre, bcfg, *, size: int, flip: bool, stem: str) -> dict:
        inputs = {"input_ids": f"int64 (windows, tokens), tokens <= {pre.size}",
                  "attention_mask": "int64 (windows, tokens): 1 for tokens, 0 for padding",
                  "doc": "int64 (windows,): the document (0..D-1, in order) of each window; "
                         "every document has at least one window"}
        text = {
            "tokenizer": f"{stem}.tokenizer", "window": pre.size, "truncate": pre.truncate,
            "windows": f"the text's tokens (no special tokens) cut into consecutive chunks of "
                       f"{pre.size - 2}, each wrapped as [CLS] chunk [SEP]"
                       + ("; only the first window is kept (--truncate)" if pre.truncate else ""),
            "layout": "one window per row, documents' windows in order; shorter windows padded "
                      f"with the pad token ({_pad_id(pre)}) and attention_mask 0",
            "pooling": "inside the graph: a document's embedding is the mean over every "
                       "unmasked token of all its windows, L2-normalised"}
        return {"inputs": inputs, "text": text}

    def export_assets(self, pre, folder: Path, meta: dict) -> None:
        tok_dir = folder / meta["text"]["tokenizer"]
        tok_dir.mkdir()
        for name in TOKENIZER_FILES:
            src = Path(pre.tokenizer_dir) / name
            if src.is_file():
                shutil.copy2(src, tok_dir / name)

    def parity_extras(self, pre) -> tuple[list, str]:
        extra = long_texts(pre)
        return extra, (f"{len(extra)} shipped BBC articles longer than one window" if extra
                       else "")

    def runtime(self, meta: dict, folder: Path) -> "TextInputs":
        return TextInputs(meta, folder)

    def describe_export(self, meta: dict, model_path: Path) -> tuple[str, str]:
        window = meta["text"]["window"]
        return (f"token windows of up to {window} (input_ids, attention_mask, doc); "
                f"tokenizer in {model_path.parent / meta['text']['tokenizer']}",
                "labels, token windows, pooling")


register(TextModality())


def _pad_id(pre) -> int:
    return int(pre.tokenizer.pad_token_id or 0)


def _shown(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def looks_like_path(arg: str) -> bool:
    """A command-line INPUT meant as a file: one word with a path separator or a file suffix."""
    if not arg or len(arg) > 4096 or any(c.isspace() for c in arg):
        return False
    return ("/" in arg or os.sep in arg or Path(arg).suffix.lower() in PATH_SUFFIXES
            + IMAGE_EXTENSIONS)


def _word_texts(a: str, cfg) -> tuple[list[str], list[str]]:
    """The texts (and the names shown) one command-line INPUT stands for."""
    path = Path(a)
    is_file = len(a) < 4096 and "\n" not in a and is_regular_file(a)
    if os.path.isdir(a):
        return _folder_texts(a, cfg)
    if is_file and is_image_path(path):
        raise DataError(f"{a}: an image, but the run classifies texts; pass texts or text files")
    if is_file and path.suffix.lower() in TABLE_EXTENSIONS:
        ds = from_table(path, TextOptions(cfg.text_column, None, cfg.encoding),
                        need_labels=False)
        return ds.sources, ds.describe_sources()
    if is_file:
        return [decode(_file_bytes(path), a, cfg.encoding)], [a]
    if looks_like_path(a):
        raise DataError(f"{a}: no such file; to classify it as a text, pass it with --text")
    return [a], [_shown(a)]


def _folder_texts(folder: str, cfg) -> tuple[list[str], list[str]]:
    """The .txt files under a folder given to predict, one text each (folders.inputs_under)."""
    txt = inputs_under(folder, lambda p: p.suffix.lower() == ".txt", "text file(s)",
                       "a folder holding no .txt files; pass texts, text files or a folder of "
                       ".txt files (to evaluate a folder of labelled texts: headstart evaluate "
                       "RUN FOLDER)")
    return [decode(_file_bytes(p), str(p), cfg.encoding) for p in txt], [str(p) for p in txt]


def _file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e}); check that the file exists "
                        "and is readable") from None


# -- embeddings of texts with a frozen backbone, cached by text content -------------------------
def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def count_truncated(pre: TextPreprocess, texts: list[str]) -> int:
    """How many texts are longer than one window (and lose tokens under truncation)."""
    full = TextPreprocess(pre.tokenizer_dir, pre.size, truncate=False)
    return sum(len(w) > 1 for w in full.windows(texts))


def embed_texts(backbone, pre: TextPreprocess, texts: list[str], *, batch_size: int = 32,
                progress: bool = False, desc: str = "embedding") -> np.ndarray:
    """(n, dim) float32 embeddings, in the order of `texts`. Documents are sorted by length
    and grouped so a batch holds about `batch_size` windows of similar length (little
    padding); long documents' windows are pooled inside the backbone."""
    out = np.zeros((len(texts), backbone.feature_dim), np.float32)
    if not texts:
        return out
    windows = pre.windows(texts)
    order = sorted(range(len(texts)), key=lambda i: -sum(len(w) for w in windows[i]))
    was_training = backbone.training
    backbone.eval()
    device = devices.of(backbone)
    bar = tqdm(total=len(texts), desc=desc, disable=not progress, unit="text")
    try:
        with torch.inference_mode():
            for idx in doc_batches(windows, order, batch_size):
                batch = devices.to(pre.collate([windows[i] for i in idx]), device)
                out[idx] = backbone(batch).float().cpu().numpy()
                bar.update(len(idx))
    finally:
        bar.close()
        backbone.train(was_training)
    return out


def extract_texts(ds, extractor, pre: TextPreprocess, *, cache=None, batch_size: int = 32,
                  progress: bool = True, desc: str = "embedding") -> Extracted:
    """Texts were checked as they were read: every one is kept. Without an extractor there is
    nothing to compute."""
    texts = ds.sources
    if extractor is None:
        return Extracted(None, list(range(len(texts))), [], 0)
    hashes = [text_hash(t) for t in texts]
    key = extractor.key(pre) if cache is not None else ""
    cached = cache.get_many(key, hashes, 0) if cache is not None else {}
    todo = [i for i, h in enumerate(hashes) if h not in cached]
    feats = np.zeros((len(texts), 1, extractor.backbone.feature_dim), np.float32)
    for i, h in enumerate(hashes):
        if h in cached:
            feats[i, 0] = cached[h]
    if todo:
        new = embed_texts(extractor.backbone, pre, [texts[i] for i in todo],
                          batch_size=batch_size, progress=progress, desc=desc)
        feats[todo, 0] = new
        if cache is not None:
            cache.put_many(key, [(hashes[i], 0, new[j]) for j, i in enumerate(todo)])
    return Extracted(feats, list(range(len(texts))), [], len(texts) - len(todo), hashes=hashes)


def pool_tokens(hidden: torch.Tensor, batch: dict, *, normalize: bool) -> torch.Tensor:
    """(W, L, D) hidden states -> (docs, D): masked mean over each document's tokens (all its
    windows), as TextBackbone.forward pools the last layer."""
    mask, doc = batch["attention_mask"], batch["doc"]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    sums = (hidden * m).sum(1).float()
    n_docs = int(batch.get("n_docs", int(doc.max()) + 1 if len(doc) else 0))
    out = sums.new_zeros(n_docs, sums.shape[1]).index_add_(0, doc, sums)
    counts = sums.new_zeros(n_docs, 1).index_add_(0, doc, m.sum(1).float())
    emb = out / counts.clamp_min(1.0)
    return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb


def long_texts(pre, *, count: int = 2) -> list[str]:
    """Shipped BBC articles longer than one window of `pre` (they check the pooling over
    windows); none when the run truncates or the corpus is not installed."""
    if pre.truncate:
        return []
    try:
        texts, labels, _ = shipped.load_bbc_news()
    except HeadstartError:
        return []
    _, test = shipped.bbc_split(texts, labels)
    # the longest first: about 3-4 windows of 256 tokens
    ordered = sorted(test[:200], key=lambda i: -len(texts[i]))
    chosen = [texts[i] for i in ordered[:count]]
    return [t for t, w in zip(chosen, pre.windows(chosen)) if len(w) > 1]


# -- export ----------------------------------------------------------------------------------------
class TextGraph(nn.Module):
    """Token windows -> (logits, probabilities) (D, classes): input_ids and attention_mask
    (windows, tokens) int64, and doc (windows,) int64, the document (0..D-1, in order) each
    window belongs to: the backbone's own batch, pooled over each document's windows."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, doc: torch.Tensor):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "doc": doc,
                 "n_docs": doc.max() + 1}  # a tensor: the number of documents stays dynamic
        logits = self.model(batch)
        return logits, torch.softmax(logits, dim=1)


class TextInputs:
    """Texts for an exported graph: the sidecar's tokenizer and windows, laid out as
    TextPreprocess.collate lays them out for the PyTorch backbone."""

    unit = "text"

    def __init__(self, meta: dict, folder: Path) -> None:
        text = meta["text"]
        self.pre = TextPreprocess(str(folder / text["tokenizer"]), int(text["window"]),
                                  truncate=bool(text["truncate"]))

    @property
    def pad_id(self) -> int:
        return _pad_id(self.pre)

    def windows(self, texts: list[str]) -> list[list[list[int]]]:
        return self.pre.windows(texts)

    def prepare(self, texts: list[str]) -> list:
        """Many texts as inputs (their windows), tokenised together."""
        return self.windows(texts)

    def windowed(self, texts: list[str]) -> int:
        """How many texts are longer than one window (the parity check's multi-window texts)."""
        return sum(len(w) > 1 for w in self.windows(texts))

    def feed(self, docs: list) -> dict:
        ids, mask, doc = flat_windows(docs, self.pad_id)
        return {"input_ids": ids, "attention_mask": mask, "doc": doc}

    def predict(self, run, texts: list, *, batch_size: int, skip_bad: bool, max_pixels: int,
                bar, classes: int):
        """(logits, every index, no skips): like embed_texts, documents sorted by length,
        about batch_size windows per batch."""
        out = np.zeros((len(texts), classes), np.float32)
        if texts:
            windows = self.windows(texts)
            order = sorted(range(len(texts)), key=lambda i: -sum(len(w) for w in windows[i]))
            for idx in doc_batches(windows, order, batch_size):
                out[idx] = run([windows[i] for i in idx])
                bar.update(len(idx))
        return out, list(range(len(texts))), []
