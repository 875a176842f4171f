"""The channels: REST, CLI and MCP, each derived from the operation registry."""
