"""Rate limiting per gateway, per agent on a gateway and per user: algorithms, memory and Redis backends, leases
of quota, and the limiter the router and the management API call."""
