# C types for agent_http.py when it is compiled (setup.py); the .py stays plain Python.
cdef class AgentRequest:
    cdef public object protocol, transport, flow, client, message_event, waiter, pending, principal, connection
    cdef public str method, agent_id, rid
    cdef public bytes method_bytes, raw_path, target, forwarded
    cdef public list headers
    cdef public dict header_map
    cdef public bytearray body
    cdef public bint expect_100, more_body, response_complete, disconnected, keep_alive, started, chunked
    cdef public bint terminated, head_only
    cdef public int status, credentials
    cdef public double started_at

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
