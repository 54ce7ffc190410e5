"""The trace data model and the trace file."""
