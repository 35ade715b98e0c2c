"""Blocks shared by the algorithms: batched heads, hashed embeddings."""
