"""Outbound HTTP to addresses that operators configure (gateway health URLs, webhooks), made safe."""
