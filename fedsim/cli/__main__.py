"""``python -m fedsim.cli``: the ``fedsim`` command."""

import sys

from fedsim.cli import main

if __name__ == "__main__":
    sys.exit(main())
