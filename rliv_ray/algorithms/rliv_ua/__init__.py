"""RLIV-UA (rliv-ua.txt sections 3.3-3.5): multi-task critics with a supervised reward split."""
