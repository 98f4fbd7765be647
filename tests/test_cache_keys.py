"""Cache keys are stable: the keys of models, rows, tuning references and studies, and the audit's models, of small
fixed configurations, as computed by the code that wrote the ``runs/`` directories in use (c7d07c8, before the
applications moved onto ``lightning_unlearn.experiment``). A results directory stays valid only while these hold: a
changed key means every model and row of an existing directory is trained or evaluated again. A key may change only
on purpose (a new setting that changes results), and then these values with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lightning_unlearn.audit import load_config as load_audit_config
from lightning_unlearn.audit.shadow import make_shadow_plan
from lightning_unlearn.benchmark import load_config, make_plan
from lightning_unlearn.benchmark.cache import run_hash
from lightning_unlearn.tune.config import group_record, load_tune_config
from lightning_unlearn.tune.objective import reference_key
from lightning_unlearn.tune.run import study_name

DIGITS = {"class_path": "lightning_unlearn.data.DigitsDataModule", "init_args": {"image_size": 4, "batch_size": 64}}
ALLCNN = {"class_path": "lightning_unlearn.backbones.AllCNN", "init_args": {"width": 0.125}}
FINETUNE = {"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": 0.01},
            "max_epochs": 1}
BENCHMARK = {
    "data": {**DIGITS, "init_args": {**DIGITS["init_args"], "num_workers": 0}},  # not part of a model's key
    "backbone": ALLCNN,
    "training": {"max_epochs": 2, "lr": 0.05},
    "scenarios": [{"name": "class-wise", "targets": [{"classes": [3]}]},
                  {"name": "random", "targets": [{"fraction": 0.1}]}],
    "seeds": [0, 1],
    "methods": [FINETUNE, {"name": "Amnesiac", "class_path": "lightning_unlearn.methods.Amnesiac", "max_epochs": 1,
                           "trainer": {"gradient_clip_val": 1.0}}],
    "trainer": {"accelerator": "cpu", "num_threads": 1},
    "evaluator": {"mia": True, "zrf": False},
}

#: ``models/`` directory names (role-key) of BENCHMARK.
MODELS = [
    "gold-285fbdc1ddf7f3da", "gold-3e84afa8a43afe41", "gold-a627586af2532cc3",
    "gold-c4d2c991b1533e1d", "original-66e636c37808519c", "original-89604eb9b4395ffe",
]
#: Every row's ``config_hash`` (its ``result.json``), by its directory under ``output_dir``.
ROWS = {
    "runs/class-wise/classes-3/seed0/Original": "2fbdfff1ad75dfc6",
    "runs/class-wise/classes-3/seed0/Retrain": "b75dd7d4b4d97bf8",
    "runs/class-wise/classes-3/seed0/Finetune": "fe651cd8915489bf",
    "runs/class-wise/classes-3/seed0/Amnesiac": "b20c210eea68c3e3",
    "runs/class-wise/classes-3/seed1/Original": "05fd36e61c4e984f",
    "runs/class-wise/classes-3/seed1/Retrain": "c7d08ebd181d6b1e",
    "runs/class-wise/classes-3/seed1/Finetune": "39efcab9ba05040e",
    "runs/class-wise/classes-3/seed1/Amnesiac": "2042ff7a1bdd2f49",
    "runs/random/fraction-0.1/seed0/Original": "a45d4f4d5d75f715",
    "runs/random/fraction-0.1/seed0/Retrain": "28972c397df1234b",
    "runs/random/fraction-0.1/seed0/Finetune": "3736732b2e5a2d05",
    "runs/random/fraction-0.1/seed0/Amnesiac": "4f18157196ab6814",
    "runs/random/fraction-0.1/seed1/Original": "fb9da46ea9ffb804",
    "runs/random/fraction-0.1/seed1/Retrain": "330ed8d25a50e117",
    "runs/random/fraction-0.1/seed1/Finetune": "6586055e206c0bdf",
    "runs/random/fraction-0.1/seed1/Amnesiac": "84202004822e1d02",
}
#: The tuning of BENCHMARK on class 5, seed 10: its models, its reference rows' keys and its study's name.
TUNE_MODELS = [
    "gold-c73f11a900f687b9", "original-0579684aaaf1f951",
]
TUNE_REFERENCES = {
    "class-wise / class 5 / seed 10/Original": "74b8bea6318dab08",
    "class-wise / class 5 / seed 10/Retrain": "f47c8adebd161046",
}
TUNE_STUDIES = {
    "Finetune": "Finetune-c17523384601",
}
#: The audit's models (``<name>:<row>``) of 4 shadows, 20 targets, 5 forgotten per shadow.
AUDIT_MODELS = [
    "gold-26a8b86631598a09:Retrain", "gold-51fa2527868caa66:Retrain", "gold-53041b0cd59a1a54:Retrain",
    "gold-7a54e220018a4546:", "gold-b04b1fec1ade8d2b:", "gold-b82978fe63654aa3:Retrain",
    "gold-e2310da9b23a881e:", "gold-ff7a598e2360ebf5:", "original-446dadec5be66ba7:Original",
    "original-a1fe77b9903b2128:Original", "original-c91f528fc2423da6:Original", "original-d9e8a67f2eedb2a9:Original",
    "unlearned-47171d065d547ba0:Finetune", "unlearned-52b8308b24111ad8:Finetune", "unlearned-65b29eead8c15095:Finetune",
    "unlearned-ee7ff59192d8a917:Finetune",
]


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    (root / "bench.yaml").write_text(yaml.safe_dump({"output_dir": str(root / "bench"), **BENCHMARK}, sort_keys=False))
    tune = {"benchmark": str(root / "bench.yaml"), "output_dir": str(root / "tune"),
            "scenarios": [{"name": "class-wise", "targets": [{"classes": [5]}]}], "seeds": [10],
            "methods": ["Finetune"], "n_trials": 2}
    (root / "tune.yaml").write_text(yaml.safe_dump(tune, sort_keys=False))
    audit = {"output_dir": str(root / "audit"), "data": DIGITS, "backbone": ALLCNN,
             "training": {"max_epochs": 2, "lr": 0.05}, "shadow_models": 4, "targets": 20, "forget_per_model": 5,
             "methods": [FINETUNE], "trainer": {"accelerator": "cpu", "num_threads": 1}}
    (root / "audit.yaml").write_text(yaml.safe_dump(audit, sort_keys=False))
    return root


def test_benchmark_model_and_row_keys(configs: Path) -> None:
    cfg = load_config(configs / "bench.yaml")
    plan = make_plan(cfg)
    assert sorted(plan.models) == MODELS
    specs = {m.name: m for m in cfg.methods}
    rows = {f"{g.dir.relative_to(configs / 'bench')}/{name}": run_hash(cfg, g, name, specs.get(name))
            for g in plan.groups for name in cfg.rows_for(g.scenario)}
    assert rows == ROWS


def test_tuning_model_reference_and_study_keys(configs: Path) -> None:
    cfg = load_tune_config(configs / "tune.yaml")
    assert sorted(cfg.plan.models) == TUNE_MODELS
    refs = {f"{g.describe()}/{w}": reference_key(cfg.bench, g, w)
            for g in cfg.plan.groups for w in ("Original", "Retrain")}
    assert refs == TUNE_REFERENCES
    contexts = [{"group": g, "record": group_record(g)} for g in cfg.plan.groups]
    assert {mt.name: study_name(cfg, mt, contexts) for mt in cfg.methods} == TUNE_STUDIES


def test_audit_model_keys(configs: Path) -> None:
    assert sorted(make_shadow_plan(load_audit_config(configs / "audit.yaml")).models) == AUDIT_MODELS
