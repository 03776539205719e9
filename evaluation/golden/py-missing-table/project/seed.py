import os
import sqlite3

db = sqlite3.connect(os.environ["APP_DB"])
db.execute("INSERT INTO accounts (id, name) VALUES (1, 'Acme')")
db.execute("INSERT INTO invoices (account_id, total_cents) VALUES (1, 12500)")
db.commit()
print("seeded", db.execute("SELECT count(*) FROM invoices").fetchone()[0], "invoice(s)")
