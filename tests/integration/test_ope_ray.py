"""`rliv ope` on Ray Data (one task per file) gives the in-process sums, and bad input still
comes back as one line."""

import pytest

from rliv_ray.data.live_config import LiveWorldConfig
from rliv_ray.data.live_generate import generate_live_world
from rliv_ray.ope.scan import ope_files, scan
from rliv_ray.ope.streaming import StreamSettings, finalize
from rliv_ray.ope.targets import OPEInputError, TargetSpec
from tests.unit.test_cli_ope import write_policy

pytestmark = pytest.mark.ray


def test_ray_data_gives_the_in_process_estimates(local_ray, tmp_path):
    generate_live_world(tmp_path / "live", LiveWorldConfig(n_users=40, days=1, seed=2,
                                                           history_length=16),
                        n_files=3, progress=False)
    files, _ = ope_files(tmp_path / "live")
    spec = TargetSpec(write_policy(tmp_path / "policy.pt"))
    settings = StreamSettings(estimators=("ips", "dr", "ncis", "ncis_per_decision"),
                              n_bootstrap=30)
    runs = [finalize(scan(files, spec, settings, beta=0.5, workers=workers, batch_rows=50),
                     settings) for workers in (0, 2)]
    for a, b in zip(*(r.estimates for r in runs), strict=True):
        assert (a.estimator, a.n) == (b.estimator, b.n)
        for field in ("value", "ci_low", "ci_high", "effective_sample_size"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-9)
    with pytest.raises(OPEInputError, match="another action space"):
        scan(files, TargetSpec("python:tests.unit.test_cli_ope:three_actions"), settings,
             beta=0.5, workers=2)
