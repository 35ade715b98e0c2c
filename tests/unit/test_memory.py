"""reuse_freed_memory: a loop that frees and reallocates the same tensors stops page-faulting.

Counted in minor page faults (getrusage), not time, in fresh processes: the glibc setting is
process-wide and cannot be undone.
"""

import subprocess
import sys

import pytest

LOOP = """
import resource, sys, torch
from rliv_ray.algorithms.common.memory import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else None
x = torch.randn(12, 1024, 128)
w = torch.randn(12, 128, 64)
def step():  # three 3 MiB activations alive at once, then freed, as in a forward pass
    h = torch.bmm(x, w)
    r = h.relu()
    return (r * 2.0).sum()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", LOOP, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activations_are_reused_instead_of_faulted_in_again():
    applied, reused = faults("reuse")
    _, default = faults("default")
    assert applied == "True"
    pages_per_step = 3 * (12 * 1024 * 64 * 4) // 4096  # 2,304 with fresh pages every time
    assert default >= 50 * pages_per_step / 4  # glibc's defaults trim the freed 9 MiB
    assert reused < default / 10
