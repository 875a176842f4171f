# C types for circuit.py when it is compiled (setup.py); the .py stays plain Python.
cdef class CircuitBreakers:
    cdef public object threshold, cool_down, clock, on_open
    cdef public dict _circuits

    cpdef void admit(self, str gateway_id)
    cpdef void success(self, str gateway_id)
