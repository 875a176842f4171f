"""The data plane: what serves agent traffic, in process, for every request.

The connection's protocol (protocol.py) hands invoke requests to the router (router.py), which picks a deployment
(strategies.py) from the routing table (table.py), checks the caller's key (keys.py) and the rate limits
(limits/), forwards through the upstream pool (upstream.py) and keeps circuits, in-flight counts and traffic
figures. It imports nothing of the control plane (no workflow, store, model or channel module): the control
plane publishes a RoutingSnapshot to the table, hands in the key loader and reads the figures back. Every module
here is compiled with Cython (setup.py); a .pxd beside a module gives its classes C types.
"""
