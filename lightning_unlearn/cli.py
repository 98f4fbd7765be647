"""``lightning_unlearn``: LightningCLI with ``fit``/``validate``/``test``/``predict`` and ``unlearn``.

``unlearn`` is a method of :class:`UnlearnTrainer` added through :meth:`UnlearnCLI.subcommands`. The original model comes
in through ``--original_ckpt`` (never ``ckpt_path``, which means "resume" in Lightning).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from lightning_unlearn.checkpoints import (
    check_same_forget_set,
    load_backbone,
    save_checkpoint,
    write_splits_json,
)
from lightning_unlearn.data.base import UnlearningDataModule


class UnlearnTrainer(Trainer):
    """A ``Trainer`` with an :meth:`unlearn` entry point. Every other behaviour is Lightning's."""

    def unlearn(
        self,
        model: Any,
        datamodule: UnlearningDataModule,
        original_ckpt: str,
        gold_ckpt: str | None = None,
        output: str | None = None,
    ) -> dict[str, Any]:
        """Unlearn: run an unlearning method on the model in ``original_ckpt`` and write ``unlearned.ckpt``.

        Args:
            model: the unlearning method (an ``UnlearningMethod``).
            datamodule: the data, with the same forget spec, holdout and seed as the original model's checkpoint.
            original_ckpt: the trained model to unlearn from (read only, loaded with ``weights_only=True``).
            gold_ckpt: optional retrained (gold) model, checked to describe the same splits; methods and the evaluator
                that need it find it as ``trainer.gold_model``.
            output: where to write the unlearned checkpoint (default: ``<log_dir>/unlearned.ckpt``). Never overwritten.
        """
        datamodule.setup("fit")
        backbone, original_meta = load_backbone(original_ckpt, datamodule, what=f"original checkpoint {original_ckpt}")
        self.original_meta = original_meta
        self.gold_model = None
        self.gold_meta: dict[str, Any] | None = None
        if gold_ckpt is not None:
            self.gold_model, self.gold_meta = load_backbone(gold_ckpt, datamodule, what=f"gold checkpoint {gold_ckpt}")
            check_same_forget_set(self.gold_meta, original_meta, f"gold checkpoint {gold_ckpt}", original_ckpt)
        if getattr(model, "model", None) is None:
            model.attach(backbone)
        out_path = Path(output) if output else Path(self.log_dir or self.default_root_dir) / "unlearned.ckpt"
        for p in (original_ckpt, gold_ckpt):
            if p is not None and Path(p).resolve() == out_path.resolve():
                raise FileExistsError(f"Refusing to write the unlearned model over the input checkpoint {p}.")
        if out_path.exists():
            raise FileExistsError(f"{out_path} exists; pass another `--output` (checkpoints are never overwritten).")

        start = time.perf_counter()
        self.fit(model, datamodule=datamodule)
        wall = time.perf_counter() - start
        unlearn_time = model.unlearn_time_s if getattr(model, "unlearn_time_s", None) is not None else wall
        summary: dict[str, Any] = {
            **model.method_config(),
            "unlearn_time_s": unlearn_time,
            "fit_wall_time_s": wall,
            "original_ckpt": str(original_ckpt),
            "gold_ckpt": str(gold_ckpt) if gold_ckpt else None,
            "original_train_time_s": original_meta.get("train_time_s"),
            "gold_train_time_s": (self.gold_meta or {}).get("train_time_s"),
            "splits": {k: v for k, v in datamodule.splits_info().items() if not k.endswith("_indices")},
            "output": str(out_path),
        }
        if self.is_global_zero:
            meta = {
                "version": 1,
                "role": "unlearned",
                "splits": datamodule.splits_info(),
                "unlearn_time_s": unlearn_time,
                "method": summary["method"],
                "hparams": summary["hparams"],
                "original_ckpt": str(original_ckpt),
                "original_train_time_s": original_meta.get("train_time_s"),
            }
            save_checkpoint(out_path, model.unlearned_backbone(), meta, protect=(original_ckpt, gold_ckpt))
            (out_path.parent / "unlearn.json").write_text(json.dumps(summary, indent=1, default=str))
            rank_zero_info(f"Unlearned model written to {out_path} ({summary['method']}, {unlearn_time:.2f} s).")
        self.unlearn_summary = summary
        return summary


class UnlearnCLI(LightningCLI):
    """LightningCLI with the ``unlearn`` subcommand and the DataModule -> backbone links."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_class", UnlearnTrainer)
        kwargs.setdefault("datamodule_class", UnlearningDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("subclass_mode_model", True)
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = dict(LightningCLI.subcommands())
        commands["unlearn"] = {"model", "datamodule"}
        return commands

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        # Lightning builds one parser per subcommand through add_arguments_to_parser, which does not know which;
        # remember it so that `unlearn` can skip the DataModule -> backbone links.
        self._preparing_subcommand: str | None = subcommand
        try:
            return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        finally:
            self._preparing_subcommand = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if getattr(self, "_preparing_subcommand", None) == "unlearn":
            return  # the method's backbone comes from --original_ckpt (backbone=None): no link target to fill
        for attr in ("num_classes", "in_channels", "image_size"):
            parser.link_arguments(f"data.{attr}", f"model.init_args.backbone.init_args.{attr}", apply_on="instantiate")
        for attr in ("mean", "std"):
            parser.link_arguments(
                f"data.{attr}", f"model.init_args.backbone.init_args.{attr}", compute_fn=list, apply_on="instantiate"
            )

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        path = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
        if path and self.trainer.is_global_zero and isinstance(self.datamodule, UnlearningDataModule):
            write_splits_json(Path(path).parent, self.datamodule.splits_info())
            rank_zero_info(f"Checkpoint: {path}")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning_unlearn`` command (``benchmark`` is parsed by ``lightning_unlearn.benchmark``)."""
    import sys

    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["benchmark"]:
        from lightning_unlearn.benchmark import main as benchmark_main

        benchmark_main(argv[1:])
        return
    UnlearnCLI(args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":  # pragma: no cover
    main()
