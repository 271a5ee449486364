"""Ingestion: watch, stabilize, group, validate and fingerprint what people drop in."""
