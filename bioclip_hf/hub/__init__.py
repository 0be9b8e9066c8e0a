"""The Hugging Face Hub: access (offline, fast failure), the release registry and pins, provenance, cards, upload."""
