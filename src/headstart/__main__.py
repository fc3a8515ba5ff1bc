"""`python -m headstart ...` (and so `torchrun -m headstart ...`): the command line."""
import sys

from .cli.main import main

sys.exit(main())
