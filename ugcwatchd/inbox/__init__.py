"""Ingestion (DESIGN §5): watch, stabilize, group, validate and fingerprint what people drop in."""
