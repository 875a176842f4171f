# C types for inflight.py when it is compiled (setup.py); the .py stays plain Python.
cdef class InFlight:
    cdef public dict counts, elsewhere
    cdef public object prefix, members, fallback, redis, instance, ttl_ms

    cpdef void start(self, str deployment_id)
    cpdef void finish(self, str deployment_id)
