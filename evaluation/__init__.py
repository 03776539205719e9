"""Golden tasks and the evaluation that runs them on the real engine (``metabuilder eval``)."""
