"""Data: synthetic long-term-dependency probes and real-data pipelines."""
