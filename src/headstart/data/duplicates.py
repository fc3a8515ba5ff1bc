"""Exact copies among the examples, found by the content hashes that the pass over the data
computes for the feature cache (images: the file's bytes; texts: the text).

Two things about copies change what a user should believe, and both are said in the log and
recorded in metrics.json, never acted on silently:

- copies under different labels: at least one label is wrong (or the classes overlap), and
  the model is taught both;
- a copy in the training split and another in the validation split: validation then scores
  examples the model was trained on, and every choice made on it (the image size, the cut,
  how far to adapt, when to stop) leans toward memorising.

Nothing is removed or moved: the split stays the one the seed draws, so figures stay
comparable with runs on the same data without copies."""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

SHOWN = 3  # groups named in the log


def find(keys: Sequence[str], labels: Sequence[str], names: Sequence[str],
         in_val: Sequence[bool]) -> dict | None:
    """{groups, copies, conflicting, across_splits, examples} over the examples whose key is
    known (an empty key is an input not hashed), or None where no two are the same."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        if k:
            groups[k].append(i)
    dup = [g for g in groups.values() if len(g) > 1]
    if not dup:
        return None
    conflicting = [g for g in dup if len({labels[i] for i in g}) > 1]
    across = [g for g in dup if any(in_val[i] for i in g) and not all(in_val[i] for i in g)]
    shown = conflicting[:SHOWN] or across[:SHOWN]
    return {"groups": len(dup), "copies": sum(len(g) - 1 for g in dup),
            "conflicting": len(conflicting), "across_splits": len(across),
            "examples": [[f"{names[i]} ({labels[i]})" for i in g[:3]] for g in shown]}


def describe(found: dict, unit: str) -> str:
    """One log line: how many copies, what they cost, and the fix."""
    line = (f"duplicates: {found['groups']} group(s) of identical {unit} "
            f"({found['copies']} extra cop{'y' if found['copies'] == 1 else 'ies'})")
    said = []
    if found["conflicting"]:
        said.append(f"{found['conflicting']} group(s) carry different labels, so at least one "
                    "label in each is wrong")
    if found["across_splits"]:
        said.append(f"{found['across_splits']} group(s) have copies in both training and "
                    "validation, so validation scores examples the model trained on")
    if not said:
        return line + ", all in one split and under one label"
    shown = "; ".join(" = ".join(g) for g in found["examples"])
    fix = "fix the labels or remove the copies" if found["conflicting"] else "remove the copies"
    return line + "; " + "; ".join(said) + f" (e.g. {shown}); {fix}"


def copies(n: int) -> str:
    """'is an exact copy of' or 'are exact copies of', as the count asks."""
    return "is an exact copy of one of the" if n == 1 else "are exact copies of"


def seen_in_training(keys: Sequence[str], trained_on: set, names: Sequence[str],
                     right) -> dict:
    """{count, of, examples, accuracy_without}: the evaluated examples whose content is that of
    an example the model learned from, and the accuracy on the others (None if none is left).
    A copy scores what the model memorised, not how it generalises."""
    at = copies_of(keys, trained_on)
    seen = set(at)
    rest = [bool(r) for i, r in enumerate(right) if i not in seen]
    return {**summary(at, keys, names), "accuracy_without": sum(rest) / len(rest) if rest else None}


def copies_of(keys: Sequence[str], trained_on: set) -> list[int]:
    """Indices of the examples whose content (key) is in `trained_on`."""
    return [i for i, k in enumerate(keys) if k and k in trained_on]


def summary(at: list[int], keys: Sequence[str], names: Sequence[str]) -> dict:
    """{count, of, examples}: of `keys`, the copies at `at`, the first few by name."""
    return {"count": len(at), "of": len(keys), "examples": [names[i] for i in at[:SHOWN]]}


def describe_seen(found: dict, unit: str) -> str | None:
    """The warning `evaluate` prints, or None where no evaluated example was trained on."""
    if not found or not found["count"]:
        return None
    without = (f"; accuracy on the other {found['of'] - found['count']}: "
               f"{found['accuracy_without']:.4f}" if found["accuracy_without"] is not None
               else "")
    return (f"warning: {found['count']} of the {found['of']} {unit} evaluated "
            f"{copies(found['count'])} examples the model was trained on (e.g. "
            f"{', '.join(found['examples'])}), so the accuracy above is optimistic{without}; "
            f"evaluate on {unit} it has not seen")
