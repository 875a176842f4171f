# C types for table.py when it is compiled (setup.py); the .py stays plain Python. Cython makes these
# dataclasses' fields, and their __init__'s arguments, in the order declared here: keep the .py's order.
cdef class GatewayRoute:
    cdef public str id, organization_id, name, environment
    cdef public object region
    cdef public str status, health_status, scheme, host
    cdef public object port
    cdef public bytes base_path, host_header
    cdef public object api_key, timeout, limits


cdef class Target:
    cdef public str deployment_id, agent_version
    cdef public object weight
    cdef public str status
    cdef public GatewayRoute gateway
    cdef public object rate_limit
    cdef public bint fail_closed
    cdef public str agent_id
    cdef public bytes upstream_headers, answer_lines
