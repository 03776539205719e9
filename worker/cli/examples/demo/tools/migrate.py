"""Create the demo database's schema (``--drop`` removes it: the rollback)."""

import os
import sqlite3
import sys

db = sqlite3.connect(os.environ["DEMO_DB"])
if "--drop" in sys.argv:
    db.execute("DROP TABLE IF EXISTS results")
    print("dropped table results")
else:
    db.execute("CREATE TABLE IF NOT EXISTS results (name TEXT PRIMARY KEY, value REAL)")
    print("migrated: table results")
db.commit()
