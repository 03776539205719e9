import os
import sqlite3

db = sqlite3.connect(os.environ["APP_DB"])
rows = db.execute("SELECT name, email FROM users ORDER BY name").fetchall()
print(f"{len(rows)} user(s)")
