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
from lightning_unlearn.audit.config import AuditConfig, AuditConfigError, build_parser, load_config
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

__all__ = ["AuditConfig", "AuditConfigError", "AuditError", "ULiRAResult", "attack_metrics", "bin_index",
           "build_parser", "challenge_score", "epsilon_from_rates", "evaluate_scores", "fit_gaussians",
           "forgetting_quality", "load_config", "logit_confidence", "main", "model_confidences", "per_example_epsilon",
           "run_audit",
           "threshold_attack_rates", "ulira"]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """``lightning_unlearn audit -c configs/audit/<name>.yaml [--key value ...]``."""
    from lightning_unlearn.audit.config import config_from_namespace

    args = list(sys.argv[1:] if argv is None else argv)
    ns = build_parser().parse_args(args)
    try:
        cfg = config_from_namespace(ns)
        result = run_audit(cfg)
    except (AuditConfigError, AuditError) as err:
        print(f"lightning_unlearn audit: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (KeyboardInterrupt, SystemExit) as err:
        from lightning_unlearn.executors import is_interrupt

        if not is_interrupt(err):
            raise
        print("lightning_unlearn audit: interrupted; run the same command again to resume (finished models and scores "
              "are reused)", file=sys.stderr)  # fmt: skip
        raise SystemExit(130) from None
    if result["failures"]:
        raise SystemExit(1)
