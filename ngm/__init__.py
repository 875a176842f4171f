"""Nexus Gateway Manager: a control plane for Kailash Nexus gateways."""

__version__ = "0.1.0"
