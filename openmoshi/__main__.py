"""`python -m openmoshi ...` (and `torchrun -m openmoshi ...`): the `openmoshi` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
