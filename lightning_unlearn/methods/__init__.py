"""Unlearning methods (one file each) and the plain ``Classifier`` that trains the original and gold models."""

from lightning_unlearn.methods.base import Frozen, UnlearningMethod
from lightning_unlearn.methods.classifier import Classifier

__all__ = ["Classifier", "Frozen", "UnlearningMethod"]
