CREATE TABLE invoices (id INTEGER PRIMARY KEY, account_id INTEGER REFERENCES accounts(id),
                       total_cents INTEGER NOT NULL);
