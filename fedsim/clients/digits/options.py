"""Options of the ``digits`` task (typed, checked before anything is loaded)."""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.clients.options import TaskOptions, option

#: Images in scikit-learn's bundled digits dataset.
N_SAMPLES = 1_797


@dataclass(frozen=True)
class DigitsOptions(TaskOptions):
    """``alpha``: Dirichlet label skew; ``lr``: SGD step; ``batch_size``; ``test_fraction``
    of each silo held out; ``min_size``: the fewest images a silo may get."""

    alpha: float = option(0.5, low=0.0, low_open=True)
    lr: float = option(0.05, low=0.0, low_open=True)
    batch_size: int = option(32, low=1)
    test_fraction: float = option(0.2, low=0.0, high=1.0, low_open=True, high_open=True)
    min_size: int = option(4, low=2)

    def max_silos(self) -> int:
        """Every silo needs ``min_size`` of the 1,797 images.

        >>> DigitsOptions().max_silos()
        449
        """
        return N_SAMPLES // self.min_size
