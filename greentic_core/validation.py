"""Environment validation (placeholder: being written)."""

from __future__ import annotations

from .spec import Environment


def validate_environment(env: Environment) -> None:
    """Raise the first :class:`~greentic_core.errors.SpecError` the environment breaks."""
