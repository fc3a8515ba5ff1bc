"""`headstart` command line: thin commands over the library. Errors print one line, exit 2."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from ..exceptions import HeadstartError
from . import commands
from .compare_cmd import add_compare
from .export_cmd import add_export
from .rank_cmd import add_rank
from .serve_cmd import add_serve


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="headstart", description="Transfer learning for small "
                                "labelled datasets, offline, on a CPU.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in ("models", "predict", "train", "pretrain", "evaluate", "make-dataset"):
        getattr(commands, f"add_{name.replace('-', '_')}")(sub)
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
    if not args.debug:  # a library's warning is one line too, without its source line
        warnings.showwarning = lambda message, category, *_a, **_k: print(
            f"warning: {one_line(message)}", file=sys.stderr)
    code = _run(args)
    if os.environ.get("WORLD_SIZE", "1") != "1":  # a process of a torchrun job
        from ..training import distributed
        distributed.exit_job(code)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        code = args.func(args) or 0
        if code == 0 and os.environ.get("WORLD_SIZE", "1") != "1":
            from ..training import distributed
            distributed.finish_job()  # no process leaves while rank 0 writes
        return code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("\ninterrupted. Progress up to the last finished epoch is saved; run the same "
              "command again to resume.", file=sys.stderr)
        return 130
    except (HeadstartError, OSError) as e:
        if args.debug:
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a bug: still one line, and how to see more
        if args.debug:
            raise
        print(f"error: unexpected {type(e).__name__}: {one_line(e)} (a bug in headstart; "
              "re-run with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1


def one_line(e: BaseException, limit: int = 2000) -> str:
    message = " ".join(str(e).split()) or type(e).__name__
    return message if len(message) <= limit else message[:limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
