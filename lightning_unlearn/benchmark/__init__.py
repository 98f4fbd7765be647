"""``lightning_unlearn benchmark``: every listed method on every scenario x forget target x seed, against the gold model.

For each *group* (scenario, forget target, seed) the benchmark

1. trains the original model on D = D_r + D_f and the gold (retrained) model on D_r, once, cached under
   ``output_dir/models/<role>-<hash>/`` by a hash of everything that determines them (data and backbone config,
   training settings, seed, and the sha256 of the sample indices they train on). Groups whose training set is the same
   (the holdout is drawn before D_f, so every class-wise, sub-class and random target of one seed trains the original
   on the same samples) share one original; each group gets a copy of it that records its own splits, because the
   checkpoint loaders check the split hashes of every model against the DataModule. A method that needs the updates
   recorded while the original was trained (``Amnesiac``) gets them from one ``AmnesiacRecorder`` per forget set,
   attached when the original is trained;
2. evaluates the original ("Original" row) and the gold model ("Retrain" row, its training time as its cost);
3. runs every method from the group's original through :meth:`~lightning_unlearn.trainer.UnlearnTrainer.unlearn` with an
   :class:`~lightning_unlearn.evaluation.UnlearningEvaluator` against the gold model.

The user's own models can stand in for the trained ones: ``original_ckpt`` (a path or ``{seed: path}``) and a
target's ``gold_ckpt``, read weights-only (with ``model_source`` for files this package did not write), checked before
anything is trained and imported into ``output_dir/models/<role>-given-<hash>/`` (:mod:`~.given`,
``docs/embedding.md``).

Every run writes ``result.json`` into its own directory (``output_dir/runs/<scenario>/<target>/seed<k>/<method>/``)
last: a run with that file is finished and is read back instead of redone when the benchmark is started again (unless
its configuration changed, which its stored ``config_hash`` tells). At the end ``results.csv``, ``results.json``,
``report.md`` and plots are written (:mod:`lightning_unlearn.benchmark.report`).

Config (YAML, parsed with jsonargparse; ``lightning_unlearn benchmark --help`` lists every key)::

    output_dir: runs/benchmark/quickstart
    data: {class_path: lightning_unlearn.data.DigitsDataModule, init_args: {image_size: 8}}   # no forget/seed
    backbone: {class_path: lightning_unlearn.backbones.AllCNN, init_args: {width: 0.25}}     # shapes from the data
    training: {max_epochs: 20, lr: 0.05}                  # original and gold models (gold_max_epochs: default same)
    scenarios:
      - {name: class-wise, targets: [{classes: [3]}]}     # targets: ForgetSpec dicts
      - {name: sub-class, targets: [{classes: [3], per_class: 40}]}
      - {name: random, targets: [{fraction: 0.1}]}
    seeds: [0, 1]
    methods:
      - {name: Finetune, class_path: lightning_unlearn.methods.Finetune, init_args: {lr: 0.01}, max_epochs: 5}
    trainer: {accelerator: cpu, devices: 1, precision: 32-true}
    evaluator: {mia: true, zrf: true, plots: false}

Python: ``run_benchmark(load_config("configs/benchmark/quickstart.yaml"))``.

The package, on :mod:`lightning_unlearn.experiment` (settings, method specs, the store, training and unlearning jobs,
progress, the command's errors): :mod:`~.specs` (scenarios, targets, given checkpoints), :mod:`~.config` (the parsed
configuration, its parser and loading), :mod:`~.tuned` (rows at tuned settings), :mod:`~.validate` (the checks before
training), :mod:`~.scaleout` (executor settings), :mod:`~.given` (checks of the user's models), :mod:`~.plan` (groups,
models to train, names and hashes), :mod:`~.cache` (what is on disk), :mod:`~.jobs` (what one job runs), :mod:`~.batch`
(the jobs of one start), :mod:`~.execution` (:func:`run_benchmark`, :func:`main`), :mod:`~.report`, :mod:`~.plots`,
:mod:`~.stats`, :mod:`~.features` (which methods forget by the outputs but not by the features) and :mod:`~.protocol`.

A scenario may also be a sequence of deletion requests on one model (``{name, requests: [...]}``): request ``k``
forgets among what the earlier ones left, every method continues from its own unlearned model of request ``k - 1``,
the gold model of request ``k`` is retrained without everything forgotten so far, and each request is reported as a
scenario of its own (``"<name>: request k"``).
"""

from lightning_unlearn.benchmark.config import (
    BenchmarkConfig,
    build_parser,
    config_from_namespace,
    load_config,
    validate_config,
)
from lightning_unlearn.benchmark.execution import main, run_benchmark
from lightning_unlearn.benchmark.jobs import run_method, run_reference, train_model
from lightning_unlearn.benchmark.plan import Group, ModelJob, Plan, build_backbone_for, build_datamodule, make_plan
from lightning_unlearn.benchmark.report import read_results, render_report, write_all, write_results
from lightning_unlearn.benchmark.specs import BASELINE_METHODS, RESULT_FILE, BenchmarkConfigError, Scenario
from lightning_unlearn.benchmark.stats import add_gaps
from lightning_unlearn.benchmark.tuned import TunedSource
from lightning_unlearn.experiment import MethodSpec, TrainerSettings, TrainingSettings

__all__ = [
    "BASELINE_METHODS",
    "RESULT_FILE",
    "BenchmarkConfig",
    "BenchmarkConfigError",
    "Group",
    "MethodSpec",
    "ModelJob",
    "Plan",
    "Scenario",
    "TrainerSettings",
    "TrainingSettings",
    "TunedSource",
    "add_gaps",
    "build_backbone_for",
    "build_datamodule",
    "build_parser",
    "config_from_namespace",
    "load_config",
    "main",
    "make_plan",
    "read_results",
    "render_report",
    "run_benchmark",
    "run_method",
    "run_reference",
    "train_model",
    "validate_config",
    "write_all",
    "write_results",
]
