"""SL-MGAC's policy.pt is read as tensors plus JSON: a crafted pickle never runs."""

import pytest
import torch

from rliv_ray.algorithms.sl_mgac.train import load_policy


class Payload:
    """Unpickling this would write a file (what a crafted policy.pt could do)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_crafted_pickle_is_refused_without_running(tmp_path):
    path, target = tmp_path / "policy.pt", tmp_path / "written_by_the_payload"
    torch.save({"meta": "{}", "state_dict": {}, "x": Payload(target)}, path)
    with pytest.raises(ValueError, match="not a policy file written by `rliv train sl-mgac`"):
        load_policy(path)
    assert not target.exists()


def test_a_file_of_the_old_format_is_refused_with_one_line(tmp_path):
    path = tmp_path / "policy.pt"
    torch.save({"spec": {}, "state_dict": {}, "edges": [1.0]}, path)  # no "meta"
    with pytest.raises(ValueError, match="train again"):
        load_policy(path)
