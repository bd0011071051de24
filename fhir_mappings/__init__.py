"""fhir_mappings package."""
