# C types for upstream.py when it is compiled (setup.py); the .py stays plain Python.
cdef class _Connection:
    cdef public object pool, key, loop, transport, writes, parser, response, timer
    cdef public bint unflushed, reused, closed, fresh_parser_needed
    cdef public double idle_since, deadline, timeout


cdef class UpstreamResponse:
    cdef public object conn, error, waiter, callback
    cdef public bint head_only, head_done, complete, keep_alive, paused
    cdef public int status
    cdef public list headers, chunks


cdef class UpstreamPool:
    cdef public object policy, max_idle, idle_seconds, dns_ttl, connect_timeout, _idle, _tls
    cdef public dict _dns
    cdef public set _open
