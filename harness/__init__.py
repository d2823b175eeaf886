"""harness: Ray-distributed hyperparameter sweeps and benchmarks for PyTorch text classifiers."""

__version__ = "0.1.0"
