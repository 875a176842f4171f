# C types for limiter.py when it is compiled (setup.py); the .py stays plain Python.
import cython

from ngm.nodes.ratelimit.leases cimport Leases
from ngm.nodes.ratelimit.memory cimport MemoryBackend


cpdef bytes _scope_lines(bytes template, long long remaining, long long reset_ms)


cdef class RateLimiter:
    cdef public MemoryBackend local
    cdef public Leases leases
    cdef public object shared, redis, instance, namespace, api_limit, api_window_ms, live_instances, _task
    cdef public bint redis_up
    cdef public dict counters, _scopes

    @cython.locals(admitted=tuple)
    cpdef bytes check_local(self, object principal, object limits, str gateway_id, str agent_id,
                            object agent_override)

    @cython.locals(which=tuple, cached=tuple)
    cpdef tuple _request_scopes(self, object principal, object limits, str gateway_id, str agent_id,
                                object agent_override)
