"""Database projection of runs: SQLAlchemy models, engine factory and repositories."""
