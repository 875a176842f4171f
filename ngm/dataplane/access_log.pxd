# C types for access_log.py when it is compiled (setup.py); the .py stays plain Python.
cdef class AccessLog:
    cdef public object stream
    cdef public bint enabled
    cdef public list _lines

    cpdef void add(self, object client, str method, object path, int status, double started, object principal,
                   str rid)
