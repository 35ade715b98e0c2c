"""The same --seed and data give the same parameters, to the bit, for both algorithms with
num_learners=0; and a run stopped at any iteration and resumed ends with the parameters of
one uninterrupted run (the reader goes on at the batch it had reached, the lazy target rows
and SparseAdam's step count come back as they were).

The data are several batches per epoch, in two files for RLIV-UA (Ray Data would otherwise
deliver them in either order), and the run is stopped between two scheduled checkpoints."""

import pytest
import torch

from rliv_ray.algorithms.common.driver import TrainSettings
from rliv_ray.algorithms.rliv_ua.train import train_rliv_ua
from rliv_ray.algorithms.sl_mgac.train import train_sl_mgac
from rliv_ray.cli import main
from rliv_ray.train_loop import LoopSettings
from tests.integration.processes import assert_same_parameters, parameters
from tests.sampleshards import write_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ITERATIONS, STOPPED = 6, 3  # 3 updates per iteration of 128 rows; checkpoints every 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    assert main(["generate-live", str(root / "world"), "--users", "80", "--days", "1",
                 "--quiet"]) == 0
    assert main(["build-live-samples", str(root / "world"), str(root / "live"),
                 "--groups", "2", "--quiet"]) == 0
    return {"rliv-ua": write_shards(root / "ua", rows=1024, files=2),  # 8 batches an epoch
            "sl-mgac": root / "live"}


def train(algorithm, samples, out, iterations, resume=False):
    training = {"train_batch_size_per_learner": 128}
    if algorithm == "rliv-ua":
        training["id_buckets"] = 1024
    settings = TrainSettings(loop=LoopSettings(iterations=iterations, checkpoint_every=4,
                                               progress=False),
                             updates_per_iteration=3, seed=7, training=training)
    fn = train_rliv_ua if algorithm == "rliv-ua" else train_sl_mgac
    fn(samples, out, settings, resume=resume)
    return parameters(out)


@pytest.mark.parametrize("algorithm", ["rliv-ua", "sl-mgac"])
def test_same_seed_same_parameters_and_a_resumed_run_equals_one_run(ray4, data, tmp_path,
                                                                     algorithm):
    samples = data[algorithm]
    once = train(algorithm, samples, tmp_path / "once", ITERATIONS)
    again = train(algorithm, samples, tmp_path / "again", ITERATIONS)
    assert_same_parameters(once, again)

    stopped = train(algorithm, samples, tmp_path / "split", STOPPED)
    assert any(not torch.equal(once[k], stopped[k]) for k in once)  # the last 3 iterations moved
    resumed = train(algorithm, samples, tmp_path / "split", ITERATIONS, resume=True)
    assert_same_parameters(once, resumed)
