"""reuse_freed_memory: activations come from the heap and are reused, not mapped afresh.

Checked in fresh processes (the glibc setting is process-wide and cannot be undone), through
``mallinfo2`` (how many blocks are mmapped) and page-fault counts, not time. glibc's own
behaviour without the setting depends on the order of earlier frees, so the fault count is
asserted only with the setting; the mmap check is what tells the two apart.
"""

import json
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json, resource, sys, torch
from rliv_ray.algorithms.common.memory import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost").split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else None
mapped = libc.mallinfo2().hblks
big = torch.empty(12 << 20, dtype=torch.uint8)  # 12 MiB: mmapped under glibc's defaults
big_mapped = libc.mallinfo2().hblks > mapped
del big

x, w = torch.randn(12, 1024, 128), torch.randn(12, 128, 64)
def step():  # three 3 MiB activations alive at once, then freed, as in a forward pass
    h = torch.bmm(x, w)
    r = h.relu()
    return (r * 2.0).sum()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "big_mapped": big_mapped, "faults": faults}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_activations_are_reused_instead_of_mapped_afresh():
    reuse, default = probe("reuse"), probe("default")
    assert reuse["applied"] is True
    assert default["big_mapped"] and not reuse["big_mapped"]
    fresh_pages_per_step = 3 * (12 * 1024 * 64 * 4) // 4096  # 2,304 if nothing were reused
    assert reuse["faults"] < 50 * fresh_pages_per_step / 10
