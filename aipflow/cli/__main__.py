"""``python -m aipflow.cli``: the ``aipflow`` command (torchrun and SLURM launch it this way)."""

import sys

from aipflow.cli import main

sys.exit(main())
