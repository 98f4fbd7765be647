"""``python -m lightning_unlearn.tune -c configs/tune/<name>.yaml``."""

from lightning_unlearn.tune import main

main()
