"""fedsim: cross-silo federated learning on Flower with a WAN time simulator."""

__version__ = "0.1.0"
