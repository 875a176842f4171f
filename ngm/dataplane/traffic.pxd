# C types for traffic.py when it is compiled (setup.py); the .py stays plain Python.
import cython


cdef class Bucket:
    cdef public long long requests, errors, rejected
    cdef public object hist  # a defaultdict: typed as dict, Cython's indexing would skip its default


cdef class TrafficStats:
    cdef public object clock, buckets
    cdef public dict unflushed, _current

    @cython.locals(start=cython.longlong, current=tuple, b=Bucket)
    cpdef void record(self, str deployment_id, double latency_ms, bint error)
