"""The MDP layer: stitching consecutive interactions of a user-author pair, gaps, ASA."""
