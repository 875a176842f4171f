# C types for router.py when it is compiled (setup.py); the .py stays plain Python.
cdef class Router:
    cdef public object table, pool, breakers, stats, inflight, limiter
    cdef public dict selectors, states


cdef class _Forwarding:
    cdef public object request, principal, scope, policy, region, key, key_source, body, owner
    cdef public str request_id
    cdef public bytes rid
