"""The methods' base class (issue 27): every method hands its backbone to the base constructor, which attaches it;
optimizers are built in one place."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch

import lightning_unlearn.methods as methods
from lightning_unlearn.methods import UnlearningMethod
from lightning_unlearn.methods.optim import make_optimizer

from conftest import digits_dm, small_allcnn

METHODS_DIR = Path(methods.__file__).resolve().parent
PUBLIC = sorted(
    name for name in methods.__all__
    if isinstance(getattr(methods, name), type) and issubclass(getattr(methods, name), UnlearningMethod)
    and name != "UnlearningMethod"
)


def _super_init_calls(path: Path) -> list[tuple[str, ast.Call]]:
    """``(class name, call)`` of every ``super().__init__(...)`` inside an ``__init__`` of ``path``."""
    found = []
    for cls in ast.walk(ast.parse(path.read_text())):
        if not isinstance(cls, ast.ClassDef):
            continue
        for fn in cls.body:
            if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                for node in ast.walk(fn):
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and node.func.attr == "__init__" and isinstance(node.func.value, ast.Call)
                            and getattr(node.func.value.func, "id", None) == "super"):
                        found.append((cls.name, node))
    return found


@pytest.mark.parametrize("name", PUBLIC)
def test_every_method_hands_its_backbone_to_the_base_class(name):
    """Five methods passed `backbone=None` to the base class and attached the backbone themselves afterwards."""
    cls = getattr(methods, name)
    path = Path(__import__(cls.__module__, fromlist=["x"]).__file__)
    calls = [call for owner, call in _super_init_calls(path) if owner == cls.__name__]
    assert calls, f"{name} has no super().__init__ call"
    for call in calls:
        given = {kw.arg: kw.value for kw in call.keywords}
        assert isinstance(given.get("backbone"), ast.Name) and given["backbone"].id == "backbone", ast.unparse(call)
    assert "self.attach(" not in path.read_text()


@pytest.mark.parametrize("name", PUBLIC)
def test_a_method_built_with_a_backbone_holds_it(name):
    backbone = small_allcnn(digits_dm())
    method = getattr(methods, name)(copy.deepcopy(backbone))
    assert method.model is not None and method.unlearned_backbone().head.out_features == 10


def test_optimizers_are_built_in_one_place():
    """Four copies of the SGD/Adam choice (issue 27)."""
    for path in sorted((METHODS_DIR.parent).rglob("*.py")):
        if path.name == "optim.py":
            continue
        text = path.read_text()
        assert "torch.optim.SGD(" not in text and "torch.optim.Adam(" not in text, path


def test_make_optimizer():
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = make_optimizer(params, "sgd", 0.1, momentum=0.5, weight_decay=0.01)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.5 and sgd.defaults["weight_decay"] == 0.01
    adam = make_optimizer(params, "adam", 0.1, momentum=0.5)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 0.1
    with pytest.raises(ValueError, match="Unknown optimizer 'rmsprop'; choose 'sgd' or 'adam'"):
        make_optimizer(params, "rmsprop", 0.1)
