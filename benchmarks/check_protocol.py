"""Check the protocol targets of docs/benchmarks.md on a finished benchmark (see lightning_unlearn.benchmark.protocol).

    python benchmarks/check_protocol.py runs/benchmark/fashion_mnist_memorise
"""

from lightning_unlearn.benchmark.protocol import main

if __name__ == "__main__":
    raise SystemExit(main())
