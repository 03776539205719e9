"""Store a computed value in the demo database (needs the schema of tools/migrate.py)."""

import os
import sqlite3
import sys

sys.path.insert(0, os.getcwd())  # the project root, not tools/
import calc  # noqa: E402

db = sqlite3.connect(os.environ["DEMO_DB"])
db.execute("INSERT OR REPLACE INTO results VALUES ('mean', ?)", (calc.mean([1, 2, 3, 4]),))
db.commit()
print("seeded results")
