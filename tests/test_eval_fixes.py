"""Regression tests for the evaluation defects of issue 10, section 1: ZRF references independent of every method,
the class-wise MIA non-member protocol, the gold model's role, the input check on load, evaluation that leaves the
training randomness alone, both entropy attacks and the activation distance's norm, Boundary Shrink's unclamped FGSM.

Everything runs on tiny 8x8 digits models trained for one or two epochs (the tests check mechanisms, not accuracy).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import digits_dm, quiet_trainer, small_allcnn

from lightning_unlearn.checkpoints import CheckpointError, load_backbone, read_checkpoint
from lightning_unlearn.trainer import UnlearnTrainer
from lightning_unlearn.data import ForgetSpec
from lightning_unlearn.data.base import InputMismatchError
from lightning_unlearn.evaluation import UnlearningEvaluator
from lightning_unlearn.evaluation import standard as evaluator_module  # where the MIA component calls the attacks
from lightning_unlearn.evaluation import metrics as M
from lightning_unlearn.evaluation.mia import entropy_mia
from lightning_unlearn.methods import BadTeacher, BoundaryShrink, Classifier, Finetune

SIZE = 8  # the DigitsDataModule default is 16: an 8x8 model must not load into it


def _dm(**kwargs):
    return digits_dm(image_size=SIZE, **kwargs)


def _train(path: Path, train_on: str = "all", epochs: int = 2) -> Path:
    dm = _dm(train_on=train_on)
    pl.seed_everything(0, verbose=False)
    model = Classifier(small_allcnn(dm), lr=0.05)
    trainer = quiet_trainer(max_epochs=epochs, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_fixes")
    return {"original": _train(root / "original.ckpt"), "gold": _train(root / "gold.ckpt", train_on="retain")}


def _weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# -- ZRF ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bt_seed", [0, 1])
def test_zrf_references_are_not_bad_teachers_incompetent_teacher(bt_seed: int) -> None:
    dm = _dm()
    backbone = small_allcnn(dm)
    teacher = BadTeacher(backbone, seed=bt_seed).incompetent.module
    refs = M.random_references(backbone, seed=bt_seed, count=3)
    for ref in refs:  # every randomly initialised tensor differs (BatchNorm's ones and zeros are not random)
        pairs = [(a, b) for a, b in zip(teacher.parameters(), ref.parameters(), strict=True) if a.unique().numel() > 1]
        assert pairs and not any(torch.equal(a, b) for a, b in pairs)
    # the evaluator's ZRF of the incompetent teacher itself is below 1 (with the old shared seed it was exactly 1)
    zrf = UnlearningEvaluator(mia=False, seed=bt_seed).evaluate(teacher, dm)["zrf"]
    assert zrf < 1.0 - 1e-6


def test_zrf_is_the_mean_over_the_random_initialisations() -> None:
    dm = _dm()
    model = small_allcnn(dm).eval()
    state = torch.random.get_rng_state()
    res = UnlearningEvaluator(mia=False, zrf_inits=3, seed=4).evaluate(model, dm)
    assert torch.equal(torch.random.get_rng_state(), state)  # no global draw
    x = torch.stack([dm.dataset("forget")[i][0] for i in range(len(dm.dataset("forget")))])
    with torch.no_grad():
        p = model(x).double().softmax(1)
        refs = [r(x).double().softmax(1) for r in M.random_references(model, seed=4, count=3)]
    singles = [1 - float(M.js_divergence(p, r)) for r in refs]
    assert res["zrf"] == pytest.approx(np.mean(singles), abs=1e-6)
    assert len(set(np.round(singles, 12))) == 3  # three different references
    assert M.reference_seeds(4, 3) == M.reference_seeds(4, 3) != M.reference_seeds(5, 3)


# -- MIA non-members in class-wise forgetting --------------------------------------------------------------------------
def test_classwise_mia_nonmembers_exclude_the_forgotten_class(monkeypatch) -> None:
    dm = _dm()  # class 3 forgotten
    seen: list[np.ndarray] = []
    real = evaluator_module.mia_efficacy

    def spy(*args, **kwargs):
        seen.append(np.asarray(args[3]))  # nonmember labels
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluator_module, "mia_efficacy", spy)
    model = small_allcnn(dm)
    res = UnlearningEvaluator(zrf=False).evaluate(model, dm)
    test_labels = np.asarray(dm.dataset("test").targets)
    assert 3 not in seen[-1] and len(seen[-1]) == int((test_labels != 3).sum()) == len(dm.splits["test_retain"])
    assert {"mia/entropy", "mia/entropy_logreg"} <= res.keys()
    UnlearningEvaluator(zrf=False, classwise_nonmembers="all").evaluate(model, dm)
    assert 3 in seen[-1] and len(seen[-1]) == len(test_labels)
    # random forgetting has no forgotten class: all test samples are non-members either way
    UnlearningEvaluator(zrf=False).evaluate(model, _dm(forget=ForgetSpec(fraction=0.1)))
    assert len(seen[-1]) == len(test_labels)
    with pytest.raises(ValueError, match="classwise_nonmembers"):
        UnlearningEvaluator(classwise_nonmembers="some")  # type: ignore[arg-type]


# -- the gold model's role ---------------------------------------------------------------------------------------------
def test_gold_must_be_trained_on_the_retained_data(ckpts, tmp_path) -> None:
    dm = _dm()
    model = small_allcnn(dm)
    with pytest.raises(CheckpointError, match=r"records train_on='all' \(role 'original'\).*trained on D_r"):
        UnlearningEvaluator(gold=str(ckpts["original"]), mia=False).evaluate(model, dm)
    res = UnlearningEvaluator(gold=str(ckpts["gold"]), mia=False, zrf=False).evaluate(model, dm)
    assert not math.isnan(res["gold/forget_acc_gap"])
    # a checkpoint that does not record its training data is refused too
    ckpt = read_checkpoint(ckpts["gold"])
    del ckpt["lightning_unlearn"]["splits"]["train_on"]
    torch.save(ckpt, tmp_path / "unknown.ckpt")
    with pytest.raises(CheckpointError, match="does not record which data"):
        UnlearningEvaluator(gold=str(tmp_path / "unknown.ckpt")).evaluate(model, dm)
    # and so does `unlearn --gold_ckpt`
    trainer = UnlearnTrainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_epochs=1)
    with pytest.raises(CheckpointError, match="train_on='all'"):
        trainer.unlearn(Finetune(), _dm(), str(ckpts["original"]), gold_ckpt=str(ckpts["original"]),
                        output=str(tmp_path / "u.ckpt"))
    assert not (tmp_path / "u.ckpt").exists()


# -- the input a checkpoint was trained on ----------------------------------------------------------------------------
def test_checkpoint_refuses_a_datamodule_that_shapes_input_differently(ckpts, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="image_size=8.*image_size=16"):
        load_backbone(ckpts["original"], digits_dm(image_size=16))
    load_backbone(ckpts["original"], _dm())  # the same input loads
    ckpt = read_checkpoint(ckpts["original"])
    recorded = ckpt["lightning_unlearn"]["splits"]["input"]
    assert recorded == _dm().input_info() and recorded["image_size"] == SIZE
    for key, value in (("datamodule", "lightning_unlearn.data.FashionMNISTDataModule"), ("std", [0.5])):
        changed = read_checkpoint(ckpts["original"])
        changed["lightning_unlearn"]["splits"]["input"][key] = value
        torch.save(changed, tmp_path / f"{key}.ckpt")
        with pytest.raises(InputMismatchError, match=f"{key}=.*{key}="):
            load_backbone(tmp_path / f"{key}.ckpt", _dm())


# -- evaluation never changes the result -------------------------------------------------------------------------------
def test_unlearned_weights_do_not_depend_on_what_is_evaluated(ckpts, tmp_path) -> None:
    hashes = {}
    for name, gold, evaluate, callbacks in (
        ("nothing", None, False, []),
        ("end", None, True, []),
        ("gold", ckpts["gold"], True, []),
        ("gold+periodic+plots", ckpts["gold"], True, [UnlearningEvaluator(every_n_epochs=1, plots=True)]),
        ("gold+probe+relearn+cka", ckpts["gold"], True,
         [UnlearningEvaluator(every_n_epochs=1, probe=True, relearn=True, cka=True)]),
    ):
        pl.seed_everything(0, verbose=False)
        trainer = UnlearnTrainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, max_epochs=3, callbacks=callbacks, default_root_dir=str(tmp_path / name),
        )
        method = Finetune(lr=0.02)
        trainer.unlearn(method, _dm(), str(ckpts["original"]), gold_ckpt=str(gold) if gold else None,
                        output=str(tmp_path / name / "unlearned.ckpt"), evaluate=evaluate)
        hashes[name] = _weights_hash(method.unlearned_backbone())
    assert len(set(hashes.values())) == 1, hashes


# -- entropy attacks and activation distance ---------------------------------------------------------------------------
def _entropy_probs(h: np.ndarray) -> np.ndarray:
    """Two-class probabilities whose entropy is ``h`` (in nats, < ln 2), found by bisection on p."""
    lo, hi = np.full_like(h, 1e-12), np.full_like(h, 0.5)
    for _ in range(60):
        mid = (lo + hi) / 2
        ent = -(mid * np.log(mid) + (1 - mid) * np.log(1 - mid))
        lo, hi = np.where(ent < h, mid, lo), np.where(ent < h, hi, mid)
    p = (lo + hi) / 2
    return np.stack([p, 1 - p], axis=1)


def test_entropy_attacks_svc_and_logreg_are_the_papers() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    rng = np.random.default_rng(0)
    # members have mid-range entropy, non-members low or high: an RBF SVC separates them, a linear model cannot
    h_in = rng.uniform(0.30, 0.40, 300)
    h_out = np.concatenate([rng.uniform(0.01, 0.15, 60), rng.uniform(0.55, 0.65, 60)])
    h_t = rng.uniform(0.32, 0.38, 50)
    members, nonmembers, target = _entropy_probs(h_in), _entropy_probs(h_out), _entropy_probs(h_t)
    x = np.concatenate([h_in, h_out])[:, None]
    y = np.concatenate([np.ones(300), np.zeros(120)])
    svc = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y).predict(h_t[:, None]).mean()
    logreg = LogisticRegression(class_weight="balanced", solver="lbfgs").fit(x, y).predict(h_t[:, None]).mean()
    got_svc = entropy_mia(members, nonmembers, target, attack="svc")
    got_logreg = entropy_mia(members, nonmembers, target, attack="logreg")
    assert got_svc == pytest.approx(svc, abs=1e-12) and got_svc == 1.0  # all of D_r, no subsampling
    assert got_logreg == pytest.approx(logreg, abs=1e-12)
    with pytest.raises(ValueError, match="svc"):
        entropy_mia(members, nonmembers, target, attack="tree")  # type: ignore[arg-type]


def test_activation_distance_norms() -> None:
    a = np.array([[1.0, 0.0], [0.5, 0.5]])
    b = np.array([[0.0, 1.0], [0.5, 0.5]])
    assert M.activation_distance(a, b, p=1) == pytest.approx(1.0)  # Golatkar's L1: mean of 2 and 0
    assert M.activation_distance(a, b) == pytest.approx(math.sqrt(2) / 2)  # Bad Teacher's L2
    with pytest.raises(ValueError, match="p must be >= 1"):
        M.activation_distance(a, b, p=0.5)
    dm = _dm()
    model, gold = small_allcnn(dm), small_allcnn(dm)
    l1 = UnlearningEvaluator(gold=gold, mia=False, zrf=False, activation_p=1).evaluate(model, dm)
    l2 = UnlearningEvaluator(gold=gold, mia=False, zrf=False).evaluate(model, dm)
    assert l1["gold/activation_distance"] > l2["gold/activation_distance"] > 0


# -- Boundary Shrink: the authors' effective FGSM step -----------------------------------------------------------------
def test_bs_unclamped_fgsm_reproduces_the_authors_step() -> None:
    from lightning_unlearn.attacks import fgsm

    dm = _dm()
    model = small_allcnn(dm).eval()
    x = torch.stack([dm.dataset("forget")[i][0] for i in range(8)])
    y = torch.full((8,), 3)
    free = fgsm(model, x, y, 0.25, clamp=False)
    moved = (free - x).abs()
    assert torch.all(((moved - 0.25).abs() < 1e-6) | (moved == 0))  # every pixel moves by exactly 0.25 or not at all
    assert free.min() < 0  # not clipped
    assert torch.equal(fgsm(model, x, y, 0.25), free.clamp(0, 1))
    method = BoundaryShrink(small_allcnn(dm), epsilon=0.25, clamp_adversarial=False)
    dm.setup()
    labels = method.compute_neighbour_labels(dm)
    assert labels.shape == (len(dm.dataset("forget")),) and method.hparams.clamp_adversarial is False


def test_entropy_attack_members_are_all_of_d_r_up_to_the_cap(monkeypatch) -> None:
    dm = _dm()
    sizes: list[int] = []
    real = evaluator_module.entropy_mia

    def spy(members, *args, **kwargs):
        sizes.append(len(members))
        return real(members, *args, **kwargs)

    monkeypatch.setattr(evaluator_module, "entropy_mia", spy)
    model = small_allcnn(dm)
    UnlearningEvaluator(zrf=False).evaluate(model, dm)
    assert sizes[-2:] == [len(dm.splits["retain"])] * 2  # SVC and logistic regression, on all of D_r
    UnlearningEvaluator(zrf=False, entropy_max_members=100).evaluate(model, dm)
    assert sizes[-2:] == [100, 100]
    for bad in ({"entropy_max_members": 0}, {"zrf_inits": 0}, {"activation_p": 0.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            UnlearningEvaluator(**bad)
