"""rliv-ray: RL rankers (RLIV-UA, SL-MGAC) for recommender systems, on Ray."""

__version__ = "0.1.0"
