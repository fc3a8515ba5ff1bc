"""`headstart rank`: which source model (and which cut, which strategy) will transfer best to
the user's data, before any training."""
from __future__ import annotations

import argparse
import json

from ..data.texts import TextOptions
from ..exceptions import ConfigError

EPILOG = """\
candidates: `all` (default: every installed backbone of the data's kind, earlier cuts of the
default backbone, and a random-initialisation control that should rank last), or a comma list:
  efficientnet_lite0            a zoo backbone
  efficientnet_lite0@stage5     the same network cut after a layer group
  random:efficientnet_lite0     the architecture with random weights (a control)
  runs/my-source                a source model from `headstart pretrain` (or a model folder)
Use the recommendation directly with `headstart train DATA --backbone auto`.

Below the scores, the controls a learned score must beat: a k-NN accuracy on the frozen
features (cross-validated on your data) and a static prior (the source's published ImageNet
top-1; none for texts), with the yardstick they are judged by (the leave-one-out accuracy of a
ridge linear probe) and each score's Kendall tau with it: the last line says whether LogME and
the others beat the controls on this data. Every candidate's features are rescaled first, so
the random control is judged on its information, not on its tiny scale.
"""


def add_rank(sub) -> None:
    p = sub.add_parser("rank", help="rank source models by transferability before training",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="labelled images or texts, as for `headstart train`")
    p.add_argument("--candidates", default="all", help="all, or a comma list (see below)")
    p.add_argument("--by", default="logme", choices=["logme", "hscore", "leep", "nce"],
                   help="the score that ranks (default logme)")
    p.add_argument("--max-per-class", type=int, help="examples per class to score (default: "
                   "about 1,000 in all)")
    p.add_argument("--image-size", type=int, help="pixels for every image candidate (default: "
                   "each backbone's own)")
    p.add_argument("--source-sample", help="data from the source domain, for a feature-distance "
                   "(MMD) domain column")
    p.add_argument("--n-boot", type=int, default=10, help="resamples for the intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable inputs, listed")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_rank)


def run_rank(args) -> int:
    if args.image_size is not None and not 8 <= args.image_size <= 1024:
        raise ConfigError(f"--image-size must be between 8 and 1024 pixels, got {args.image_size}")
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be a whole number from 0 to {2**32 - 1}, got {args.seed}")
    # deferred on purpose: the candidates' networks need torch, which `--help` does not
    from ..training import distributed as dist
    from ..transferability.rank import rank
    from ..transferability.recommend import decide

    dist.init_from_env()  # under torchrun each candidate's features are sharded; rank 0 prints
    quiet = args.quiet or args.json or not dist.is_main()
    result = rank(args.data, candidates=args.candidates, by=args.by,
                  max_per_class=args.max_per_class, image_size=args.image_size,
                  source_sample=args.source_sample, n_boot=args.n_boot, seed=args.seed,
                  skip_bad=args.skip_bad,
                  text_options=TextOptions(args.text_column, args.label_column, args.encoding),
                  progress=not quiet, log=(lambda *_: None) if quiet else print)
    rec = decide(result)
    if not dist.is_main():
        return 0
    if args.json:
        print(json.dumps({**result.to_dict(), "recommendation": rec.__dict__}, default=str))
        return 0
    print(result.table())
    print(str(rec))
    return 0
