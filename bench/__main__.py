"""`python -m bench` from the repository root: run the suite and print the table (see bench/run.py)."""

import os
import sys

# Set on these machines for old OpenBLAS builds, they slow current numpy down; OpenBLAS reads them
# when numpy loads, so they go before any import of numpy. Tests and CI leave them alone.
UNSET = {name: os.environ.pop(name) for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if name in os.environ}
# gRPC's core logs a GOAWAY at INFO when a server the bench stops still has a client connected: not news here.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from bench.run import main  # noqa: E402 - after the environment is settled

sys.exit(main(unset=UNSET))
