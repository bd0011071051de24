"""The calf-pain assessment on the web: its FHIR resources, ``$extract``, and the SMART app under ``/app/``."""

__all__: list[str] = []
