"""samstudy: a reproducible study of SAM and its medical adaptations against nnU-Net v2."""

__version__ = "0.1.0"
