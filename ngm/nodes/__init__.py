"""Custom Kailash nodes, one folder per capability, each a thin wrapper over plain, tested code."""
