"""A stand-in gateway in a process of its own, so a test can SIGKILL it: prints its port, serves forever.

    python -m tests.support.standin_process [mode] [delay]
"""

import sys
import threading

from tests.support.standin import StandIn

if __name__ == "__main__":
    server = StandIn(sys.argv[1] if len(sys.argv) > 1 else "healthy", float(sys.argv[2]) if len(sys.argv) > 2 else 0)
    print(server.port, flush=True)
    threading.Event().wait()
