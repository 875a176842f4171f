import pytest

from ngm.nodes.auth.keys import Principal


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

    def make(mode="healthy", delay=0.0):
        server = StandIn(mode, delay)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
