"""Rate limits in the control plane: the Kailash nodes of `ratelimits get` and `ratelimits check` (the limiter
itself is the data plane's, ngm/dataplane/limits)."""
