"""Rendering from the trace model alone: graphs, animations, reports."""
