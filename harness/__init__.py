"""fer-bench: the benchmark and reproducibility harness for semi-supervised FER."""

__version__ = "0.1.0"
