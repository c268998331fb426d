import os

# Shared 2-core CI machines: sleeping OpenMP threads (see scripts/threads.sh); set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
