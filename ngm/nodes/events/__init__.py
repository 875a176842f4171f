"""Events: health transitions and probe results, to SSE subscribers and to organizations' webhooks."""
