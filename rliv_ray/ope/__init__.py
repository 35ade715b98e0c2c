"""Off-policy evaluation (pure NumPy, no Ray): NCIS, the OPE estimators and the by-user split.

Per-decision estimators in :mod:`~rliv_ray.ope.estimators`, sequential ones in
:mod:`~rliv_ray.ope.sequential`, their checks in :mod:`~rliv_ray.ope.support`, the shared
result and bootstrap in :mod:`~rliv_ray.ope.common`. Fitted Q Evaluation needs torch and is
imported from :mod:`rliv_ray.ope.fqe` directly.
"""

from rliv_ray.ope.common import OPEEstimate, kish_ess
from rliv_ray.ope.estimators import (
    direct_method,
    doubly_robust,
    ips,
    self_normalised_dr,
    snips,
    switch_dr,
)
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
from rliv_ray.ope.sequential import (
    MagicBlend,
    doubly_robust_steps,
    magic,
    magic_blend,
    pdis,
    weighted_dr,
    wpdis,
)
from rliv_ray.ope.split import DEFAULT_TEST_SHARE, split_table, split_users

__all__ = ["DEFAULT_CAP", "DEFAULT_KIND", "DEFAULT_TEST_SHARE", "KINDS", "MagicBlend",
           "NCISEstimate", "OPEEstimate", "direct_method", "doubly_robust",
           "doubly_robust_steps", "evaluate_policy_ncis", "ips", "kish_ess", "magic",
           "magic_blend", "ncis", "ncis_steps", "pdis", "resolve_log_cap", "self_normalised_dr",
           "snips", "split_table", "split_users", "step_ratios", "switch_dr", "weighted_dr",
           "wpdis"]
