//! The orchestrator: lock → observe → plan → build → apply → record.
