"""lightning_unlearn: machine unlearning for image classifiers as PyTorch Lightning modules."""

__version__ = "0.1.0"
