"""Rate limiting per gateway, per agent on a gateway and per user: algorithms, memory and Redis backends."""
