"""Recording: the only layer that touches autograd (modes, hooks, the script runner)."""
