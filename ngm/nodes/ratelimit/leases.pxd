# C types for leases.py when it is compiled (setup.py); the .py stays plain Python.
import cython


cdef class Held:
    cdef public long long units, next_remaining, limit, index, serial, slot, count, last
    cdef public double until, window_end, quiet_until
    cdef public bint asking


cdef class Leases:
    cdef public object give_back
    cdef public long long share, granted, given_back
    cdef public dict held

    @cython.locals(now=cython.double, slot=cython.longlong, covered=cython.bint, found=list, i=cython.Py_ssize_t,
                   h=Held, tightest=cython.Py_ssize_t, least=cython.longlong, left=cython.longlong,
                   reset=cython.double, reset_ms=cython.longlong)
    cpdef object admit(self, tuple keys, tuple limits)

    @cython.locals(now=cython.double, h=Held, wish=cython.longlong, asks=cython.bint)
    cpdef object wishes(self, tuple keys)
