"""Data sources: synthetic worlds, the KuaiRand converter, Parquet IO and validation."""
