# C types for circuit.py when it is compiled (setup.py); the .py stays plain Python.
cdef class CircuitBreakers:
    cdef public object on_open
    cdef public dict _circuits
    cdef public object threshold, cool_down, clock

    cpdef void admit(self, str gateway_id)
    cpdef void success(self, str gateway_id)
