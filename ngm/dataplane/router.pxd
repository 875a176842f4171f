# C types for router.py when it is compiled (setup.py); the .py stays plain Python. The request path's steps
# are cpdef methods with typed arguments: attributes read from the C structs, steps called as C functions.
import cython

from ngm.dataplane.protocol cimport AgentRequest, AgentTraffic
from ngm.dataplane.circuit cimport CircuitBreakers
from ngm.dataplane.inflight cimport InFlight
from ngm.dataplane.table cimport GatewayRoute, Target
from ngm.dataplane.traffic cimport TrafficStats
from ngm.dataplane.upstream cimport UpstreamPool, UpstreamResponse, _Connection


cdef class Router:
    cdef public object table
    cdef public UpstreamPool pool
    cdef public CircuitBreakers breakers
    cdef public TrafficStats stats
    cdef public InFlight inflight
    cdef public dict selectors, states
    cdef public object limiter

    cpdef object state_of(self, tuple scope)

    @cython.locals(fw=_Forwarding, headers=dict)
    cpdef _Forwarding _prepare(self, AgentRequest request, object principal, str request_id)

    cpdef Target _choose(self, _Forwarding fw, frozenset exclude)

    @cython.locals(g=GatewayRoute)
    cpdef object _send_or_hand_over(self, _Forwarding fw, Target target, bytes limit_lines)

    @cython.locals(g=GatewayRoute)
    cpdef bytes _limits_now(self, _Forwarding fw, Target target, object then=*)

    cpdef object _refused(self, Target target, object refused)

    @cython.locals(request=AgentRequest, g=GatewayRoute, head=list, listed=object)
    cpdef bytes _request_head(self, _Forwarding fw, Target target)

    @cython.locals(g=GatewayRoute, failed=bint, out=list, has_length=bint, listed=object)
    cpdef bint _answer_head(self, _Forwarding fw, Target target, bytes limit_lines, UpstreamResponse response)

    cpdef void _settle(self, Target target, object response, double sent_at, bint failed)

    @cython.locals(g=GatewayRoute)
    cpdef void _send_now(self, _Forwarding fw, Target target, bytes limit_lines, _Connection conn)

    @cython.locals(target=Target, limit_lines=bytes, response=UpstreamResponse, sent_at=cython.double,
                   request=AgentRequest, failed=bint)
    cpdef void _on_upstream(self, _Forwarding fw)


cdef class _Forwarding:
    cdef public AgentRequest request
    cdef public object principal
    cdef public str request_id
    cdef public bytes rid
    cdef public tuple scope
    cdef public object policy, region, key, key_source
    cdef public bytes body
    cdef public AgentTraffic owner
    cdef public Router router
    cdef public Target target
    cdef public bytes limit_lines
    cdef public UpstreamResponse response
    cdef public double sent_at

    cpdef void upstream_news(self)
