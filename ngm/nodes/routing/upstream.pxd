# C types for upstream.py when it is compiled (setup.py); the .py stays plain Python.
import cython

from ngm.nodes.routing.turn_writes cimport TurnWrites


cdef class UpstreamResponse
cdef class UpstreamPool


cdef class _Connection:
    cdef public object key, loop, transport, parser, timer
    cdef public UpstreamPool pool
    cdef public TurnWrites writes
    cdef public UpstreamResponse response
    cdef public bint unflushed, reused, closed, fresh_parser_needed
    cdef public double idle_since, deadline, timeout

    @cython.locals(response=UpstreamResponse)
    cpdef UpstreamResponse send(self, bytes head, bytes body, bint head_only, double deadline, double timeout)
    cpdef void watch(self, double deadline, double timeout)


cdef class UpstreamResponse:
    cdef public _Connection conn
    cdef public object error, waiter, callback, connection
    cdef public bint head_only, head_done, complete, keep_alive, paused
    cdef public int status
    cdef public list headers, chunks

    cpdef void wake(self)
    cpdef void finish(self)
    cpdef object read_nowait(self)
    @cython.locals(conn=_Connection)
    cpdef void release(self)


cdef class UpstreamPool:
    cdef public object policy, max_idle, idle_seconds, dns_ttl, connect_timeout, _idle, _tls
    cdef public dict _dns
    cdef public set _open

    cpdef _Connection idle_connection(self, str scheme, str host, object port)
    @cython.locals(idle=list, conn=_Connection, now=cython.double)
    cpdef _Connection _idle_pop(self, tuple key)
    @cython.locals(idle=list)
    cpdef void _idle_push(self, _Connection conn)
