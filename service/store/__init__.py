"""The store: the audit trail, card explanations, the database schema and its migrations.

``sink`` (the ``AuditSink`` protocol: what callers submit to and report on), ``audit`` (the SQL
writer behind it), ``spool`` (records waiting on disk while the database is down), ``refusals``
(outage or refusal), ``dead_letters`` (refused records, kept), ``schema`` (every table, the
engine), ``probe`` (readiness of the store), ``explanations`` (cards' explanation pages),
``migrations`` (Alembic).
"""

__all__: list[str] = []
