"""Process wiring: settings, logging, Temporal client, embedded dev server, workers, CLI."""
