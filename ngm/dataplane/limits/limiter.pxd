# C types for limiter.py when it is compiled (setup.py); the .py stays plain Python.
import cython

from ngm.dataplane.limits.leases cimport Leases
from ngm.dataplane.limits.memory cimport MemoryBackend


cpdef bytes _scope_lines(bytes template, long long remaining, long long reset_ms)


cdef class RateLimiter:
    cdef public MemoryBackend local
    cdef public object shared
    cdef public Leases leases
    cdef public object redis, instance, namespace, api_limit, api_window_ms
    cdef public bint redis_up
    cdef public object live_instances
    cdef public dict counters
    cdef public object _task
    cdef public dict _scopes

    @cython.locals(admitted=tuple)
    cpdef bytes check_local(self, object principal, object limits, str gateway_id, str agent_id,
                            object agent_override)

    @cython.locals(which=tuple)
    cpdef object _request_scopes(self, object principal, object limits, str gateway_id, str agent_id,
                                object agent_override)
