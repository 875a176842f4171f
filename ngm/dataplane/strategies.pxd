# C types for strategies.py when it is compiled (setup.py); the .py stays plain Python.
import cython

from ngm.dataplane.table cimport GatewayRoute, Target


@cython.locals(t=Target, g=GatewayRoute, pool=list)
cpdef object pick_target(object policy, object targets, object state, object circuit_state, object routing_key)
