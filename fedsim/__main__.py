"""``python -m fedsim``: the ``fedsim`` command (how ``--engine mpi`` starts its ranks)."""

import sys

from fedsim.cli import main

if __name__ == "__main__":
    sys.exit(main())
