"""Calls out of the process: the FHIR-server address guard, pinned transport, the terminology server."""

__all__: list[str] = []
