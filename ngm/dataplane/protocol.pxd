# C types for protocol.py when it is compiled (setup.py); the .py stays plain Python.
cdef class AgentRequest:
    cdef public object protocol, transport, flow
    cdef public str method
    cdef public bytes method_bytes
    cdef public str agent_id
    cdef public bytes raw_path, target
    cdef public list headers
    cdef public dict header_map
    cdef public object client
    cdef public bytes forwarded
    cdef public bint expect_100
    cdef public bytearray body
    cdef public bint more_body
    cdef public object message_event
    cdef public bint response_complete, disconnected, keep_alive
    cdef public object waiter
    cdef public bint started, chunked, terminated, head_only
    cdef public int status
    cdef public object pending
    cdef public double started_at
    cdef public str rid
    cdef public object principal, connection
    cdef public int credentials

    cpdef void set(self)
    cpdef object complete_body(self)
    cpdef void start(self, int status, list lines, bint has_length)
    cpdef void flush(self)
    cpdef bint write(self, bytes data, bint last=*)
    cpdef void _write_now(self, bytes data)
    cpdef void _write_later(self, bytes data)
    cpdef void abort(self)
    cpdef void end(self)


cdef class AgentTraffic:
    cdef public object authenticator, router, trusted

    cpdef object begin(self, AgentRequest request)
    cpdef void finished(self, AgentRequest request)
