"""TD3 and TD3+BC on the SCRI-MDP with a continuous ranking weight (Table 1 baselines)."""
