"""``python -m fedsim.deploy ...`` = ``fedsim deploy ...``."""

import sys

from fedsim.cli import main

if __name__ == "__main__":
    sys.exit(main(["deploy", *sys.argv[1:]]))
