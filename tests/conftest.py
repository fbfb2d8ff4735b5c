"""Shared test settings: small thread counts keep the suite predictable on 2-core CI machines."""

import os

# Threads sleep instead of spinning while waiting: on a shared 2-core machine spinning OpenMP threads
# made training steps ~50x slower; on an idle machine this changes nothing.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# Under pytest-xdist (`make test` runs `-n 2`: two workers share the machine) each worker, and the
# processes its tests start, computes on one thread; alone, a test uses up to two.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root() -> str:
    return REPO
