"""fhir_mappings package."""

__all__: list[str] = []
