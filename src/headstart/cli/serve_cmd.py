"""`headstart serve RUN`: the run's ONNX export over HTTP (FastAPI + uvicorn), with a page."""
from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from ..serve import ServeLimits

LOOPBACK = ("localhost",)


def add_serve(sub) -> None:
    d = ServeLimits()
    p = sub.add_parser("serve", help="serve a run over HTTP: a JSON API and a web page "
                       "(localhost only by default)")
    p.add_argument("run", help="a run directory (exported first if it has no export yet), or "
                   "an exported .onnx file with its sidecar")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=os.environ.get("HEADSTART_TOKEN"),
                   help="require 'Authorization: Bearer TOKEN' on /model and /predict "
                   "(default: $HEADSTART_TOKEN, else none)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="micro-batching: inputs "
                   "per model run (1 turns it off)")
    p.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms,
                   help="micro-batching: how long a batch waits for more inputs")
    p.add_argument("--timeout", type=float, default=d.timeout_s, help="seconds a request may "
                   "wait for the model before a 503")
    p.add_argument("--max-request-mb", type=float, default=d.max_request_bytes / 2**20)
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="largest decoded image")
    p.add_argument("--max-text-chars", type=int, default=d.max_text_chars)
    p.add_argument("--max-texts", type=int, default=d.max_texts, help="texts per request")
    p.add_argument("--max-connections", type=int, default=64, help="concurrent connections "
                   "before new ones get a 503")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: "
                   "the cores other processes leave free, see the README's thread policy)")
    p.set_defaults(func=run_serve)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_warning(host: str, token: str | None) -> str | None:
    if is_loopback(host):
        return None
    guard = "a token is required (--token)" if token else "no token is required: pass --token"
    return (f"warning: --host {host} serves the model to every machine that can reach this "
            f"one, over plain HTTP; {guard}, and put TLS in front of it")


def ensure_export(run: str) -> None:
    """A run directory without an export is exported (and parity-checked) first."""
    from .. import api  # deferred on purpose: torch, for a run without an export only
    from ..export import export_run
    from ..export.runtime import exported_for, run_export_path

    path = Path(run)
    if not path.is_dir() or exported_for(path) is not None:
        return
    print(f"{run} has no current ONNX export: exporting it first")
    export_run(api.load(path), run_export_path(path))


def run_serve(args) -> int:
    import uvicorn  # deferred on purpose: the server itself, for `serve` only

    from ..serve import app  # deferred on purpose: FastAPI and ONNX Runtime, for `serve` only

    ensure_export(args.run)
    limits = ServeLimits(max_request_bytes=int(args.max_request_mb * 2**20),
                         max_pixels=args.max_pixels, max_text_chars=args.max_text_chars,
                         max_texts=args.max_texts, timeout_s=args.timeout,
                         max_batch=args.max_batch, batch_window_ms=args.batch_window_ms)
    service = app(args.run, limits=limits, token=args.token, threads=args.threads)
    warning = host_warning(args.host, args.token)
    if warning:
        print(warning, file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    batching = "off" if args.max_batch <= 1 else \
        f"up to {args.max_batch} inputs, {args.batch_window_ms:g} ms window"
    print(f"serving {args.run} at http://{shown}:{args.port}/ (micro-batching {batching}; "
          f"{'token required' if args.token else 'no token'}); Ctrl-C stops", flush=True)
    uvicorn.run(service, host=args.host, port=args.port, log_level="warning",
                limit_concurrency=args.max_connections, timeout_graceful_shutdown=5)
    return 0
