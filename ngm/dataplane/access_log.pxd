# C types for access_log.py when it is compiled (setup.py); the .py stays plain Python.
cdef class AccessLog:
    cdef public list _lines
    cdef public object stream
    cdef public bint enabled

    cpdef void add(self, object client, str method, object path, int status, double started, object principal,
                   str rid)
