# C types for memory.py's arithmetic when it is compiled (setup.py); the .py stays plain Python.
import cython


@cython.locals(index=cython.longlong, elapsed=cython.longlong, i=cython.Py_ssize_t, current=cython.longlong,
               previous=cython.longlong, limit=cython.longlong, used=cython.double, left=cython.longlong,
               tightest=cython.Py_ssize_t, least=cython.longlong, states=list, stored=tuple)
cpdef object _admit_sliding(dict windows, tuple keys, tuple limits, long long window, long long now)


cdef class MemoryBackend:
    cdef public object clock
    cdef public dict _windows, _tats, rejected
    cdef public double _next_prune

    @cython.locals(now_ms=cython.double)
    cpdef object admit_sliding(self, tuple keys, tuple limits, long long window)
