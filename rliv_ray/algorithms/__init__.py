"""RL algorithms: RLIV-UA and SL-MGAC (RLlib shells around pure losses)."""
