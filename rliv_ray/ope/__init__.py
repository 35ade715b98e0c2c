"""Off-policy evaluation (pure NumPy, no Ray): NCIS and the by-user train/test split."""

from rliv_ray.ope.ncis import (
    DEFAULT_CAP,
    DEFAULT_KIND,
    KINDS,
    NCISEstimate,
    evaluate_policy_ncis,
    ncis,
    ncis_steps,
    resolve_log_cap,
    step_ratios,
)
from rliv_ray.ope.split import DEFAULT_TEST_SHARE, split_table, split_users

__all__ = ["DEFAULT_CAP", "DEFAULT_KIND", "DEFAULT_TEST_SHARE", "KINDS", "NCISEstimate",
           "evaluate_policy_ncis", "ncis", "ncis_steps", "resolve_log_cap", "split_table",
           "split_users", "step_ratios"]
