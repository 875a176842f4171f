"""Baselines on the same stack as `ngm serve`: a Nexus app on uvicorn + uvloop, bound to 127.0.0.1.

GET /bare          a plain route on the Nexus app that does no work (the floor for an HTTP request)
POST /workflows/noop/execute   a Nexus @app.handler that does no work (the floor for a Nexus workflow run)
"""

import logging
import os
import sys

os.environ.setdefault("KAILASH_ENCRYPTION_KEY", "bench-only-not-a-secret-000000000000")
from nexus import Nexus  # noqa: E402

logging.disable(logging.CRITICAL)
app = Nexus(enable_durability=False, enable_auth=False, rate_limit=None)


@app.handler("noop")
async def noop(x: int = 0) -> dict:
    return {"x": x}


@app.fastapi_app.get("/bare")
async def bare():
    return {}


if __name__ == "__main__":
    import uvicorn
    import uvloop

    config = uvicorn.Config(app.fastapi_app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None,
                            access_log=False)
    uvloop.run(uvicorn.Server(config).serve())
