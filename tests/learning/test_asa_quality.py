"""On the synthetic world ASA beats the rule-based approximation, as in the paper's Table 4
(slow tier)."""

import pytest

from rliv_ray.data.ua_config import UAWorldConfig
from rliv_ray.data.ua_generate import generate_ua_world
from rliv_ray.mdp.asa import ASAConfig
from rliv_ray.mdp.pipeline import asa_report
from rliv_ray.mdp.samples import SampleConfig

pytestmark = pytest.mark.slow


def test_asa_beats_rule_based_on_held_out_users(tmp_path):
    generate_ua_world(tmp_path / "w", UAWorldConfig(n_users=300, days=14, seed=5),
                      progress=False)
    report = asa_report(tmp_path / "w", config=SampleConfig(), asa_config=ASAConfig(epochs=5),
                        workers=0, progress=False)
    table4 = report["table4"]
    assert table4["asa"]["mse"] < 0.5 * table4["rule_based"]["mse"]
    assert table4["asa"]["cosine_loss"] < table4["rule_based"]["cosine_loss"]
    # Over every interaction with a true next one, stitched or not, ASA is closer too.
    eps = report["epsilon"]["all"]
    assert eps["asa"]["mse"] < eps["rule_based"]["mse"]
    assert 0.35 < report["stitching"]["success_rate"] < 0.6  # near the paper's 47%
