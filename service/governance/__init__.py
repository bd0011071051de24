"""Clinical governance: released rule packs, their diff, test and replay; the database schema and
retention; CDS Hooks feedback; and the governance report.

Modules: ``manifest`` (released packs), ``catalogue`` (every pack this install knows),
``wording`` and ``diff`` (a pack change in a clinician's words), ``cases`` (``rules test``),
``replay`` (a candidate pack on audited calls), ``database`` (migrations, retention),
``feedback`` (parsing and writing feedback), ``reportdata``, ``svg`` and ``report`` (the HTML
report), ``routes`` (the feedback endpoint and the report page), ``runtime`` (what the app
starts), ``cli`` (``calf-cds rules|db|report|trail``), ``errors``.
"""

__all__: list[str] = []
