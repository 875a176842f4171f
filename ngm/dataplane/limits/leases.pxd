# C types for leases.py when it is compiled (setup.py); the .py stays plain Python.
import cython


cdef class Held:
    cdef public long long units, next_remaining
    cdef public double until, window_end
    cdef public long long limit, index, serial, slot, count, last
    cdef public bint asking
    cdef public double quiet_until


cdef class Leases:
    cdef public object give_back
    cdef public long long share
    cdef public dict held
    cdef public long long granted, given_back

    @cython.locals(now=cython.double, slot=cython.longlong, covered=cython.bint, found=list, i=cython.Py_ssize_t,
                   h=Held, tightest=cython.Py_ssize_t, least=cython.longlong, left=cython.longlong,
                   reset=cython.double, reset_ms=cython.longlong)
    cpdef object admit(self, tuple keys, tuple limits)

    @cython.locals(now=cython.double, h=Held, wish=cython.longlong, asks=cython.bint)
    cpdef object wishes(self, tuple keys)
