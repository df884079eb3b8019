"""gdna: Ray-distributed hyperparameter sweeps for small genomic language models."""

__version__ = "0.1.0"
