"""The parameter schema: each training option's type, default, constraint, help and command-line
spelling, declared once on its TrainConfig field (config.py) with `option(...)`, in the spirit
of scikit-learn's `_parameter_constraints`. From it come TrainConfig's validation, the options
of `headstart train`, `pretrain` and `compare` (cli/options.py) and TransferClassifier's
parameters (classifier.py)."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields

from ..exceptions import ConfigError

TRAIN, PRETRAIN, COMPARE = "train", "pretrain", "compare"
ALL = frozenset({TRAIN, PRETRAIN, COMPARE})


# -- constraints: each normalises an accepted value or says what it expected ------------------
class Rule:
    expected = "valid"
    message = ""  # a whole message instead of "NAME must be EXPECTED, got VALUE"

    def accepts(self, value) -> bool:
        raise NotImplementedError

    def normalise(self, value):
        return value


@dataclass(frozen=True)
class Number(Rule):
    """A number in [lo, hi] (ends open where `closed` says); integers only with integer."""
    lo: float | None = None
    hi: float | None = None
    closed: str = "both"  # both, left, right, neither
    integer: bool = False
    expected: str = ""

    def __post_init__(self) -> None:
        if not self.expected:
            object.__setattr__(self, "expected", self._describe())

    def _describe(self) -> str:
        what = "a whole number" if self.integer else "a number"
        if self.hi is None:
            bound = f"at least {self.lo}" if self.closed in ("both", "left") else \
                f"above {self.lo}"
            return f"{what}, {bound}" if self.integer else bound
        lo, hi = ("[" if self.closed in ("both", "left") else "("), \
            ("]" if self.closed in ("both", "right") else ")")
        return f"{what} in {lo}{self.lo:g}, {self.hi:g}{hi}"

    def accepts(self, value) -> bool:
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind):
            return False
        if math.isnan(value):
            return False
        low_ok = self.lo is None or (value >= self.lo if self.closed in ("both", "left")
                                     else value > self.lo)
        high_ok = self.hi is None or (value <= self.hi if self.closed in ("both", "right")
                                      else value < self.hi)
        return low_ok and high_ok

    def normalise(self, value):
        return int(value) if self.integer else float(value)  # numpy scalars become plain


@dataclass(frozen=True)
class OneOf(Rule):
    """One of `values`."""
    values: tuple
    expected: str = ""
    message: str = ""

    def __post_init__(self) -> None:
        if not self.expected:
            shown = [str(v) for v in self.values]
            object.__setattr__(self, "expected", ", ".join(shown[:-1]) + f" or {shown[-1]}")

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value in self.values


@dataclass(frozen=True)
class AutoOr(Rule):
    """'auto', or what `rule` accepts (from a string too, as the command line gives it)."""
    rule: Number
    what: str = ""  # "a number of pixels"

    @property
    def expected(self) -> str:
        return f"'auto' or {self.what} ({self.rule.expected})"

    def _number(self, value):
        if isinstance(value, str):
            try:
                return int(value) if self.rule.integer else float(value)
            except ValueError:
                return None
        return value

    def accepts(self, value) -> bool:
        return value == "auto" or self.rule.accepts(self._number(value))

    def normalise(self, value):
        return value if value == "auto" else self.rule.normalise(self._number(value))


@dataclass(frozen=True)
class Optional(Rule):
    """None, or what `rule` accepts."""
    rule: Rule

    @property
    def expected(self) -> str:
        return self.rule.expected

    def accepts(self, value) -> bool:
        return value is None or self.rule.accepts(value)

    def normalise(self, value):
        return None if value is None else self.rule.normalise(value)


@dataclass(frozen=True)
class Matches(Rule):
    """A text that `pattern` matches whole (lower-cased)."""
    pattern: object  # a compiled regular expression
    expected: str

    def accepts(self, value) -> bool:
        return isinstance(value, str) and self.pattern.fullmatch(value.strip().lower()) is not None

    def normalise(self, value):
        return value.strip().lower()


class AsText(Rule):
    """Anything, kept as its text (e.g. --unfreeze 2 or 'all'; the plan checks the range)."""

    def accepts(self, value) -> bool:
        return True

    def normalise(self, value):
        return str(value)


# -- the option declaration ----------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """What a TrainConfig field declares beyond its type and default."""
    help: str
    rule: Rule | None = None  # None: no check
    flags: tuple[str, ...] | None = None  # command-line spellings; () = not on it
    commands: frozenset = ALL  # the commands that take it
    help_for: dict = field(default_factory=dict)  # {command: help} where it means more there
    metavar: str | None = None


def option(default, help: str, *, rule: Rule | None = None, flags=None, commands=ALL,
           help_for=None, metavar=None):
    """A TrainConfig field with its schema entry."""
    spec = Spec(help, rule, None if flags is None else tuple(flags), frozenset(commands),
                dict(help_for or {}), metavar)
    return field(default=default, metadata={"option": spec})


@dataclass(frozen=True)
class Option:
    """One option as the schema's readers see it."""
    name: str
    default: object
    type: str  # the field's annotation: "int", "float | None", "int | str", "bool", ...
    spec: Spec

    @property
    def flags(self) -> tuple[str, ...]:
        if self.spec.flags is not None:
            return self.spec.flags
        flag = "--" + self.name.replace("_", "-")
        if self.type == "bool":
            return ("--no-" + self.name.replace("_", "-"),) if self.default else (flag,)
        return (flag,)

    @property
    def negated(self) -> bool:
        """A boolean whose flag turns it off (--no-flip)."""
        return self.type == "bool" and bool(self.default)

    def check(self, value):
        rule = self.spec.rule
        if rule is None:
            return value
        if not rule.accepts(value):
            raise ConfigError(rule.message.format(value=value) if rule.message else
                              f"{self.name} must be {rule.expected}, got {value!r}")
        return rule.normalise(value)


def options(cls) -> list[Option]:
    """The schema of a dataclass whose fields were declared with `option`."""
    return [Option(f.name, f.default, str(f.type), f.metadata["option"]) for f in fields(cls)
            if "option" in f.metadata]
