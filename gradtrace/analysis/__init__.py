"""Analysis of recorded traces: graph model, gradient checks, training diagnostics."""
