"""``python -m fedsim.cli``: the ``fedsim`` command."""

from fedsim.cli import entry

if __name__ == "__main__":
    entry()
