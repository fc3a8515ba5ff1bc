"""`headstart` command line: thin commands over the library. Errors print one line, exit 2."""
from __future__ import annotations

import argparse
import logging
import sys

from ..exceptions import HeadstartError
from . import commands


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="headstart", description="Transfer learning for small "
                                "labelled datasets, offline, on a CPU.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in ("models", "predict", "train", "pretrain", "evaluate", "make-dataset"):
        getattr(commands, f"add_{name.replace('-', '_')}")(sub)
    from .compare_cmd import add_compare
    from .export_cmd import add_export
    from .rank_cmd import add_rank
    from .serve_cmd import add_serve

    add_compare(sub)
    add_rank(sub)
    add_export(sub)
    add_serve(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("\ninterrupted. Progress up to the last finished epoch is saved; run the same "
              "command again to resume.", file=sys.stderr)
        return 130
    except (HeadstartError, OSError) as e:
        if args.debug:
            raise
        message = " ".join(str(e).split())
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
