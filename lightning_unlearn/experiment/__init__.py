"""What the applications (``benchmark``, ``tune``, ``audit``) share, and the only code they share; public names only.

- :mod:`~.errors`: :class:`ConfigError` (a configuration that cannot run) and :class:`RunError`.
- :mod:`~.settings`: one vocabulary of settings -- training, Trainer, executor, evaluator -- and a job's threads.
- :mod:`~.config`: the fields and arguments every application's configuration shares, spelled one way.
- :mod:`~.specs`: a method as a config names it (:class:`MethodSpec`), checked and resolved; reserved row names.
- :mod:`~.build`: the DataModule, backbone and Trainer arguments of a job, from the settings it needs.
- :mod:`~.store`: cache keys, atomic files with one NaN policy, model directories with sha256 digests, corrupt
  records set aside.
- :mod:`~.outputs`: an output directory held by one run; its files never written over or through a link.
- :mod:`~.jobs`: training a model, unlearning with a method.
- :mod:`~.progress`: the progress lines and bar; Lightning's messages silenced.
- :mod:`~.tuned`: the tuned-settings file format (``best/<method>.yaml``).
- :mod:`~.entrypoint`: the commands' one-line errors, exit codes and resume hint.

The dependency rule (``docs/architecture.md``, ``tests/test_architecture.py``): core <- executors <- experiment <-
benchmark <- tune, the audit beside the benchmark.
"""

from lightning_unlearn.experiment.build import (
    LINKED_BACKBONE_ARGS,
    build_backbone,
    build_datamodule,
    eval_device,
    run_logger,
    trainer_kwargs,
)
from lightning_unlearn.experiment.config import (
    EXECUTOR_HELP,
    ExperimentConfig,
    add_experiment_arguments,
    add_run_arguments,
    command_parser,
    config_args,
    parse_command,
    parsed_values,
)
from lightning_unlearn.experiment.entrypoint import error_line, run_command
from lightning_unlearn.experiment.errors import ConfigError, RunError
from lightning_unlearn.experiment.jobs import method_kwargs, train_classifier, unlearn
from lightning_unlearn.experiment.outputs import (
    LOCK_FILE,
    RECORD_FILE,
    claim_output_dir,
    is_recorded,
    record_output,
    write_output,
)
from lightning_unlearn.experiment.progress import Progress, hms, quiet
from lightning_unlearn.experiment.settings import (
    EVALUATOR_PER_RUN,
    EVALUATOR_SKIP,
    ExecutorSettings,
    TrainerSettings,
    TrainingSettings,
    cuda_available,
    evaluator_settings,
    executor_settings,
    set_threads,
    trainer_key,
)
from lightning_unlearn.experiment.specs import (
    METHOD_KEYS,
    ORIGINAL,
    RESERVED_TRAINER_ARGS,
    RETRAIN,
    MethodSpec,
    check_method_args,
    check_methods,
    class_spec,
    import_class,
    method_identity,
    method_spec,
    slug,
)
from lightning_unlearn.experiment.store import (
    CACHE_IRRELEVANT_DATA_ARGS,
    INFO_FILE,
    atomic_path,
    config_hash,
    data_for_key,
    finite,
    fresh_dir,
    json_text,
    model_key_content,
    model_problem,
    now,
    read_json,
    row_key,
    scalars,
    set_aside,
    to_json,
    write_atomic,
    write_json,
    write_model_info,
)
from lightning_unlearn.experiment.tuned import (
    RECORD_PREFIX,
    TunedSettings,
    TuningOverlapError,
    check_not_tuned_on,
    check_writable,
    read_best,
    write_best,
)

__all__ = [
    "CACHE_IRRELEVANT_DATA_ARGS",
    "EVALUATOR_PER_RUN",
    "EVALUATOR_SKIP",
    "EXECUTOR_HELP",
    "INFO_FILE",
    "LINKED_BACKBONE_ARGS",
    "LOCK_FILE",
    "METHOD_KEYS",
    "ORIGINAL",
    "RECORD_FILE",
    "RECORD_PREFIX",
    "RESERVED_TRAINER_ARGS",
    "RETRAIN",
    "ConfigError",
    "ExecutorSettings",
    "ExperimentConfig",
    "MethodSpec",
    "Progress",
    "RunError",
    "TrainerSettings",
    "TrainingSettings",
    "TunedSettings",
    "TuningOverlapError",
    "add_experiment_arguments",
    "add_run_arguments",
    "atomic_path",
    "build_backbone",
    "build_datamodule",
    "check_method_args",
    "check_methods",
    "check_not_tuned_on",
    "check_writable",
    "claim_output_dir",
    "class_spec",
    "command_parser",
    "config_args",
    "config_hash",
    "cuda_available",
    "data_for_key",
    "error_line",
    "eval_device",
    "evaluator_settings",
    "executor_settings",
    "finite",
    "fresh_dir",
    "hms",
    "import_class",
    "is_recorded",
    "json_text",
    "method_identity",
    "method_kwargs",
    "method_spec",
    "model_key_content",
    "model_problem",
    "now",
    "parse_command",
    "parsed_values",
    "quiet",
    "read_best",
    "read_json",
    "record_output",
    "row_key",
    "run_command",
    "run_logger",
    "scalars",
    "set_aside",
    "set_threads",
    "slug",
    "to_json",
    "train_classifier",
    "trainer_key",
    "trainer_kwargs",
    "unlearn",
    "write_atomic",
    "write_best",
    "write_json",
    "write_model_info",
    "write_output",
]
