"""Evaluation in a world: any policy (reference, trained, external) on the same simulated users.

:mod:`policies` turns a policy spec into a policy; :mod:`world` rolls policies out over user
buckets with common random numbers and measures the paper's metrics; :mod:`report` prints and
writes the tables and plots.
"""
