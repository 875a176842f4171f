"""Nexus Gateway Manager: a control plane for Kailash Nexus gateways."""

from ngm import compiled

__version__ = "0.1.0"

compiled.install()  # before any other ngm module is imported
