"""``python -m lightning_unlearn.audit -c configs/audit/<name>.yaml``."""

from lightning_unlearn.audit import main

main()
