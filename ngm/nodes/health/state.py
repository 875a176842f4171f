"""Health status with hysteresis, as pure functions.

- unknown/unhealthy -> healthy (or degraded) after `healthy_threshold` consecutive successes;
- any -> unhealthy after `unhealthy_threshold` consecutive failures, except during the grace period
  after creation, when failures are counted but do not make the gateway unhealthy;
- healthy <-> degraded after `healthy_threshold` consecutive successes on the other side of
  `degraded_latency_ms` (a success counts as slow when it is slower, or when the gateway reports
  unhealthy workflows), so one slow answer never flips it.
The administrative status follows: `active` + unhealthy -> `error`; `error` + healthy/degraded ->
`active`; `inactive` and `provisioning` are never changed by the monitor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

UP = ("healthy", "degraded")


@dataclass(frozen=True)
class HealthPolicy:
    interval: float = 30.0
    timeout: float = 5.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    degraded_latency_ms: float = 1000.0
    grace_period: float = 60.0

    @classmethod
    def of(cls, gateway: dict) -> "HealthPolicy":
        return cls(interval=float(gateway["health_check_interval"]), timeout=float(gateway["health_check_timeout"]),
                   healthy_threshold=int(gateway["healthy_threshold"]),
                   unhealthy_threshold=int(gateway["unhealthy_threshold"]),
                   degraded_latency_ms=float(gateway["degraded_latency_ms"]),
                   grace_period=float(gateway["health_grace_period"]))


@dataclass(frozen=True)
class HealthState:
    health_status: str = "unknown"
    successes: int = 0
    failures: int = 0
    slow: int = 0
    fast: int = 0

    @classmethod
    def of(cls, gateway: dict) -> "HealthState":
        return cls(gateway.get("health_status") or "unknown", int(gateway.get("health_successes") or 0),
                   int(gateway.get("health_failures") or 0), int(gateway.get("health_slow") or 0),
                   int(gateway.get("health_fast") or 0))

    def columns(self) -> dict:
        return {"health_status": self.health_status, "health_successes": self.successes,
                "health_failures": self.failures, "health_slow": self.slow, "health_fast": self.fast}


def step(state: HealthState, policy: HealthPolicy, ok: bool, latency_ms: float, impaired: bool = False,
         in_grace: bool = False) -> HealthState:
    """The state after one probe. impaired: the gateway answered but reported unhealthy workflows."""
    if not ok:
        failures = state.failures + 1
        status = state.health_status
        if status != "unhealthy" and failures >= policy.unhealthy_threshold and not in_grace:
            status = "unhealthy"
        return HealthState(status, 0, failures, 0, 0)
    slow_now = impaired or latency_ms > policy.degraded_latency_ms
    new = replace(state, successes=state.successes + 1, failures=0,
                  slow=state.slow + 1 if slow_now else 0, fast=0 if slow_now else state.fast + 1)
    status, need = state.health_status, policy.healthy_threshold
    if status not in UP:
        if new.successes >= need:
            status = "degraded" if slow_now else "healthy"
    elif status == "healthy" and new.slow >= need:
        status = "degraded"
    elif status == "degraded" and new.fast >= need:
        status = "healthy"
    return replace(new, health_status=status)


def admin_status(status: str, health_status: str) -> str:
    if status == "active" and health_status == "unhealthy":
        return "error"
    if status == "error" and health_status in UP:
        return "active"
    return status
