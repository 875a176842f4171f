# C types for inflight.py when it is compiled (setup.py); the .py stays plain Python.
cdef class InFlight:
    cdef public dict counts, elsewhere
    cdef public object redis, instance, ttl_ms, prefix, members, fallback

    cpdef void start(self, str deployment_id)
    cpdef void finish(self, str deployment_id)
