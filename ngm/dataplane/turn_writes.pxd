# C types for turn_writes.py when it is compiled (setup.py); the .py stays plain Python.
cdef class TurnWrites:
    cdef public object loop
    cdef public list items

    cpdef void write(self, object owner, bytes data)
    cpdef void flush_for(self, object owner)
    cpdef void flush(self)
