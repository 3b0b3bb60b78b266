"""Errors a user can fix: each message names the problem and the fix."""


class ModelSourceError(Exception):
    """A model spec cannot be turned into files: missing, corrupt, unreachable or tampered."""
