"""The store: the audit trail (schema, writer, spool, dead letters), explanations, migrations."""
