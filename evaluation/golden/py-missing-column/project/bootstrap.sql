CREATE TABLE schema_migrations (name TEXT PRIMARY KEY);
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
INSERT INTO schema_migrations VALUES ('0001_users.sql');
