# C types for upstream.py when it is compiled (setup.py); the .py stays plain Python.
import cython

from ngm.dataplane.turn_writes cimport TurnWrites


cdef class UpstreamResponse
cdef class UpstreamPool


cdef class _Connection:
    cdef public UpstreamPool pool
    cdef public object key, loop, transport
    cdef public TurnWrites writes
    cdef public bint unflushed
    cdef public object parser
    cdef public UpstreamResponse response
    cdef public bint reused, closed, fresh_parser_needed
    cdef public double idle_since, deadline, timeout
    cdef public object timer

    @cython.locals(response=UpstreamResponse)
    cpdef UpstreamResponse send(self, bytes head, bytes body, bint head_only, double deadline, double timeout)
    cpdef void watch(self, double deadline, double timeout)


cdef class UpstreamResponse:
    cdef public _Connection conn
    cdef public bint head_only
    cdef public int status
    cdef public list headers, chunks
    cdef public bint head_done, complete, keep_alive
    cdef public object error
    cdef public bint paused
    cdef public object waiter, callback, connection
    cdef public Py_ssize_t head_bytes

    cpdef void wake(self)
    cpdef void finish(self)
    cpdef object read_nowait(self)
    @cython.locals(conn=_Connection)
    cpdef void release(self)


cdef class UpstreamPool:
    cdef public object policy, max_idle, idle_seconds, dns_ttl, connect_timeout, _idle
    cdef public dict _dns
    cdef public set _open
    cdef public object _tls, max_open
    cdef public dict _per_origin, _queued

    cpdef _Connection idle_connection(self, str scheme, str host, object port)
    @cython.locals(idle=list, conn=_Connection, now=cython.double)
    cpdef _Connection _idle_pop(self, tuple key)
    @cython.locals(idle=list)
    cpdef void _idle_push(self, _Connection conn)
