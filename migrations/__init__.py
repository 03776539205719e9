"""Alembic migrations; metadata comes from ``store.models``."""
