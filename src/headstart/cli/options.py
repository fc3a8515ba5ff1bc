"""The training options of `train`, `pretrain` and `compare`, made from the schema
(training/options.py: each TrainConfig field's flags, type, default, help and commands)."""
from __future__ import annotations

from ..training.config import TrainConfig
from ..training.options import OneOf, Option, options


def _cli_type(opt: Option):
    """What argparse converts the text to: numbers where the field is only a number; text where
    it may also be a word ('auto', 'all'), which TrainConfig.validate then reads."""
    kinds = {t.strip() for t in opt.type.split("|")} - {"None"}
    if "str" in kinds:
        return str
    return float if "float" in kinds else int


def add_options(parser, command: str, *, skip: tuple[str, ...] = ()) -> None:
    """Add every option `command` takes (but those in `skip`) to an argparse parser or group."""
    for opt in options(TrainConfig):
        if command not in opt.spec.commands or not opt.flags or opt.name in skip:
            continue
        help = opt.spec.help_for.get(command, opt.spec.help)
        if opt.type == "bool":  # a flag that turns the option on, or off (--no-flip)
            parser.add_argument(*opt.flags, dest=opt.name, action="store_false" if opt.negated
                                else "store_true", help=f"without {help}" if opt.negated
                                else help)
        else:
            rule = opt.spec.rule
            choices = list(rule.values) if isinstance(rule, OneOf) else None
            parser.add_argument(*opt.flags, dest=opt.name, type=_cli_type(opt),
                                default=opt.default, choices=choices, help=help,
                                metavar=opt.spec.metavar)


def config_from_args(args, command: str, **fixed) -> TrainConfig:
    """A TrainConfig from the options `command` took (`fixed` overrides; the rest default)."""
    given = {o.name: getattr(args, o.name) for o in options(TrainConfig)
             if command in o.spec.commands and o.flags and hasattr(args, o.name)}
    return TrainConfig(**{**given, **fixed})


def add_reading_options(parser, names: tuple[str, ...]) -> None:
    """Options of how a trained run reads its inputs (predict, evaluate): the same flags, but
    their default is the run's own setting."""
    by_name = {o.name: o for o in options(TrainConfig)}
    for name in names:
        opt = by_name[name]
        parser.add_argument(*opt.flags, dest=name, type=_cli_type(opt), default=None,
                            help=f"{opt.spec.help} (default: the run's)")
