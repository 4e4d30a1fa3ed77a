"""batchvid: a declarative batch runner for CogVideoX video generation."""

__version__ = "0.1.0"
