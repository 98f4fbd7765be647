"""Unlearning methods (one file each) and the plain ``Classifier`` that trains the original and gold models."""

from lightning_unlearn.methods.amnesiac import Amnesiac, AmnesiacRecorder, AmnesiacRelabel
from lightning_unlearn.methods.bad_teacher import BadTeacher
from lightning_unlearn.methods.base import Frozen, UnlearningFailedError, UnlearningMethod
from lightning_unlearn.methods.boundary_expanding import BoundaryExpanding
from lightning_unlearn.methods.boundary_shrink import BoundaryShrink
from lightning_unlearn.methods.classifier import Classifier
from lightning_unlearn.methods.finetune import Finetune
from lightning_unlearn.methods.fisher import FisherForgetting
from lightning_unlearn.methods.l1_sparse import L1Sparse
from lightning_unlearn.methods.negative_gradient import NegativeGradient
from lightning_unlearn.methods.random_labels import RandomLabels
from lightning_unlearn.methods.scrub import SCRUB
from lightning_unlearn.methods.salun import SalUn
from lightning_unlearn.methods.ssd import SelectiveSynapticDampening
from lightning_unlearn.methods.twin import TwinUnlearning
from lightning_unlearn.methods.unsir import UNSIR
from lightning_unlearn.methods.msg import MaskedSmallGradients
from lightning_unlearn.methods.conv_transpose import ConvolutionTranspose
from lightning_unlearn.methods.sfron import SFRon
from lightning_unlearn.methods.rum import RUM

__all__ = [
    "Amnesiac",
    "AmnesiacRecorder",
    "AmnesiacRelabel",
    "BadTeacher",
    "BoundaryExpanding",
    "BoundaryShrink",
    "Classifier",
    "Finetune",
    "FisherForgetting",
    "Frozen",
    "L1Sparse",
    "NegativeGradient",
    "RandomLabels",
    "SCRUB",
    "SalUn",
    "SelectiveSynapticDampening",
    "TwinUnlearning",
    "UNSIR",
    "UnlearningFailedError",
    "UnlearningMethod",
    "MaskedSmallGradients",
    "ConvolutionTranspose",
    "SFRon",
    "RUM",
]

from lightning_unlearn.methods.lfssd import LabelFreeSSD  # noqa: E402

__all__ += ["LabelFreeSSD"]
