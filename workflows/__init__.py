"""Deterministic orchestration: workflows only sequence what the domain decides."""
