"""Optional per-backend fast paths, imported lazily; the generic core stays the reference."""
