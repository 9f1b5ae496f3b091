"""SQLite persistence: connection, schema migrations, jobs table, group-commit writer."""
