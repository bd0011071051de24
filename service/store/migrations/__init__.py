"""Alembic migrations of the service's database (audit trail, feedback, JWT replay cache).

They live inside the ``service`` package so that an installed wheel carries them; Alembic is
configured in code (``service.governance.database``), so there is no ``alembic.ini``. To change
the schema, change the table declarations and add a revision file in ``versions/`` whose
``down_revision`` is the newest one; ``tests/service/governance/test_migrations.py`` fails until
the declarations and the migrations agree.
"""

__all__: list[str] = []
