"""The training job's own error: input it cannot make a model from."""

from __future__ import annotations


class TrainingError(Exception):
    """The job cannot produce a model from this input (the message says why)."""
