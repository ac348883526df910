"""Batch providers: one interface (`base.BatchProvider`), one module per provider SDK."""
