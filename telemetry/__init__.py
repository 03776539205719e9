"""Metrics and structured logs shared by the worker and API processes."""
