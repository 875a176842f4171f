import pytest

from ngm.nodes.auth.keys import Principal
from tests.support.processes import LOOPBACK_ONLY


@pytest.fixture
def executor(ctx):
    from ngm.workflows.executor import Executor

    return Executor(ctx)


@pytest.fixture
def owner(org):
    return Principal(org, "org_owner", "key_owner", "owner key")


def as_role(principal: Principal, role: str) -> Principal:
    return Principal(principal.organization_id, role, f"key_{role}", role)


@pytest.fixture
def standin():
    from tests.support.standin import StandIn

    servers = []

    def make(mode="healthy", delay=0.0, **options):
        server = StandIn(mode, delay, **options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
async def private_ctx(backend, tmp_path_factory, pg_database_factory):
    """An AppContext on a database of this module's own (the monitor probes every gateway it holds)."""
    from ngm.config import Settings
    from ngm.context import AppContext

    folder = tmp_path_factory.mktemp("private")
    url = f"sqlite:///{folder / 'ngm.db'}" if backend == "sqlite" else pg_database_factory()
    context = await AppContext.open(Settings.from_env({"NGM_DATA_DIR": str(folder), "NGM_DATABASE_URL": url,
                                                          "NGM_OUTBOUND_ONLY": LOOPBACK_ONLY}))
    yield context
    await context.close()


@pytest.fixture
async def monitor_ctx(private_ctx):
    yield private_ctx
    from ngm.models.query import delete

    await delete(private_ctx.database, "Gateway", {})
