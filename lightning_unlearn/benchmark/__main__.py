"""``python -m lightning_unlearn.benchmark -c configs/benchmark/<name>.yaml``."""

from lightning_unlearn.benchmark.execution import main

main()
