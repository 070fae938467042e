"""The orchestrator: model files on disk, verified, atomic, once (see docs/architecture.md)."""
