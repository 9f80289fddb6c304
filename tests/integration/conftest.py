"""Fixtures of the integration tests."""

from tests.integration.simulated_pod import pod

__all__ = ["pod"]  # the small simulated pod with a daemon on it
