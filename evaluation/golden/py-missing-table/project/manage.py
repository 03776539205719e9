"""Tiny migration runner: applies migrations/*.sql in order to $APP_DB."""
import os
import sqlite3
import sys
from pathlib import Path

db = sqlite3.connect(os.environ["APP_DB"])
db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY)")
done = {r[0] for r in db.execute("SELECT name FROM schema_migrations")}
if sys.argv[1:] != ["migrate"]:
    sys.exit("usage: manage.py migrate")
for path in sorted(Path("migrations").glob("*.sql")):
    if path.name not in done:
        db.executescript(path.read_text())
        db.execute("INSERT INTO schema_migrations VALUES (?)", (path.name,))
        print(f"applied {path.name}")
db.commit()
