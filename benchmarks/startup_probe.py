"""A Callback for ``benchmarks/startup.py``: at the first training batch it writes the time and the process's CPU
seconds to ``$STARTUP_PROBE_OUT`` and ends the process, so a run is measured up to its first training step only."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from lightning.pytorch import Callback

OUT_ENV = "STARTUP_PROBE_OUT"


class FirstStep(Callback):
    """Stamps ``time.time()`` and ``os.times()`` (user + sys) at ``on_train_batch_start``, then ``os._exit(0)``."""

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        times = os.times()
        with open(os.environ[OUT_ENV], "w") as f:
            json.dump({"time": time.time(), "cpu_s": times.user + times.system}, f)
        os._exit(0)
