"""``python -m fedsim``: the ``fedsim`` command (how ``--engine mpi`` starts its ranks)."""

from fedsim.cli import entry

if __name__ == "__main__":
    entry()
