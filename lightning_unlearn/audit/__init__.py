"""Privacy audit of unlearning with shadow models: U-LiRA (Hayes et al. 2024, sec. 4) and the NeurIPS 2023 unlearning
challenge's forgetting score (Triantafillou et al. 2024). ``python -m lightning_unlearn.audit -c configs/audit/x.yaml``
runs it; :func:`evaluate_scores`, :func:`ulira`, :func:`per_example_epsilon` work on your own models' scores.
See ``docs/audit.md``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning_unlearn.audit.challenge import (
    bin_index,
    challenge_score,
    epsilon_from_rates,
    forgetting_quality,
    per_example_epsilon,
    threshold_attack_rates,
)
from lightning_unlearn.audit.config import (
    AuditConfig,
    AuditConfigError,
    build_parser,
    config_from_namespace,
    load_config,
)
from lightning_unlearn.audit.run import evaluate_scores, run_audit
from lightning_unlearn.audit.ulira import (
    AuditError,
    ULiRAResult,
    attack_metrics,
    fit_gaussians,
    logit_confidence,
    model_confidences,
    ulira,
)
from lightning_unlearn.experiment import ConfigError, parse_command, run_command

__all__ = ["AuditConfig", "AuditConfigError", "AuditError", "ULiRAResult", "attack_metrics", "bin_index",
           "build_parser", "challenge_score", "epsilon_from_rates", "evaluate_scores", "fit_gaussians",
           "forgetting_quality", "load_config", "logit_confidence", "main", "model_confidences", "per_example_epsilon",
           "run_audit",
           "threshold_attack_rates", "ulira"]


def main(argv: Sequence[str] | None = None) -> None:
    """``lightning_unlearn audit -c configs/audit/<name>.yaml [--key value ...]``."""
    args = list(sys.argv[1:] if argv is None else argv)

    def command() -> int:
        ns = parse_command(build_parser(), args)
        try:
            result = run_audit(config_from_namespace(ns))
        except AuditError as err:  # too few shadow models or examples for the statistics: the config's to change
            raise ConfigError(str(err)) from None
        return 1 if result["failures"] else 0

    run_command("audit", command, reused="finished models and scores are reused")
