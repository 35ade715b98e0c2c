"""The offline reader: RL sample shards -> the flat tensors an RLlib learner consumes."""
