"""`python -m openmoshi ...` (and `torchrun -m openmoshi ...`): the `openmoshi` command line."""

import sys

from .cli import main

sys.exit(main())
