"""The `ngm` command. One group per resource and one command per operation, derived from the registry,
plus `serve`, `mcp` and `keys rotate-encryption`.

Runs in process against the configured database by default (as a local operator of --org, or as the
holder of --api-key); with --url it talks to a running server. This module imports neither kailash nor
nexus, so remote commands start fast.

Exit codes: 0 ok, 1 internal error, 2 invalid input or usage, 3 not authenticated or not allowed,
4 not found, 5 conflict, 6 unavailable or unreachable.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import sys
import types as pytypes
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import click
from pydantic import SecretStr

from ngm import __version__
from ngm.config import Settings
from ngm.config.logging import setup_logging
from ngm.errors import NgmError, ValidationFailed
from ngm.workflows import load_operations
from ngm.workflows.registry import Operation

EXIT_CODES = {400: 2, 401: 3, 403: 3, 404: 4, 409: 5, 422: 2, 429: 7, 503: 6}


# ---------------------------------------------------------------- running an operation

def _local_principal(org: str | None):
    from ngm.nodes.auth.keys import Principal, check_org_id

    if not org:
        raise click.UsageError("give --org ORG (or NGM_ORG) to act locally, or --url and --api-key for a server")
    try:
        check_org_id(org)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--org") from None
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    return Principal(organization_id=org, role="org_owner", key_id="local-cli", name=f"{who} (cli)", local=True)


async def _dispatch(op: Operation, params: dict | None, resource_id: str | None, url: str | None,
                    api_key: str | None, org: str | None) -> Any:
    if url:
        from ngm.channels.client import RemoteClient

        client = RemoteClient(url, api_key)
        try:
            return await client.run(op, params, resource_id)
        finally:
            await client.aclose()
    principal = None if api_key else _local_principal(org)
    from ngm.context import AppContext
    from ngm.workflows.executor import Executor

    ctx = await AppContext.open(Settings.from_env())
    try:
        if principal is None:
            principal = await ctx.auth.authenticate(api_key)
            if org and org != principal.organization_id:
                raise click.UsageError(f"--org {org} does not match the API key's organization")
        return await Executor(ctx).run(op, principal, params, resource_id)
    finally:
        await ctx.close()


def _fail(exc: NgmError) -> None:
    click.echo(f"Error: {exc.message}", err=True)
    if isinstance(exc, ValidationFailed) and isinstance(exc.details, list) and len(exc.details) > 1:
        for item in exc.details:
            click.echo(f"  {item.get('field')}: {item.get('message')}", err=True)
    sys.exit(EXIT_CODES.get(exc.status, 1))


# ---------------------------------------------------------------- output for people

def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def print_table(rows: list[dict], columns: tuple[str, ...]) -> None:
    columns = columns or tuple(rows[0].keys()) if rows else columns
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c.upper())] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def print_record(record: dict, first: tuple[str, ...] = ()) -> None:
    keys = [k for k in first if k in record] + [k for k in record if k not in first]
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        click.echo(f"{key.ljust(width)}  {_cell(record[key])}")


def _show(op: Operation, result: Any, resource_id: str | None, as_json: bool) -> None:
    if op.status_code == 204:
        result = {"id": resource_id, "deleted": True}
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    elif isinstance(result, dict) and isinstance(result.get("items"), list):
        if result["items"]:
            print_table(result["items"], op.cli.columns)
        if "total" in result:
            offset = f" (offset {result['offset']})" if result.get("offset") else ""
            click.echo(f"{len(result['items'])} of {result['total']} shown{offset}")
            if result.get("next_cursor"):
                click.echo(f"next page: --cursor {result['next_cursor']}")
        elif not result["items"]:
            click.echo("none")
    elif isinstance(result, dict):
        print_record(result, op.cli.columns)
    else:
        click.echo(_cell(result))
    if op.name == "keys_create" and not as_json:
        click.echo("Store this key now: it is not shown again.", err=True)


# ---------------------------------------------------------------- commands derived from operations

def _plain(annotation):
    """Optional[Annotated[X, ...]] -> X; also reports whether X is a list (then X is its element type)."""
    while True:
        if get_origin(annotation) in (Union, pytypes.UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        elif get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        else:
            break
    if get_origin(annotation) is list:
        return _plain(get_args(annotation)[0])[0], True
    return annotation, False


def _nullable_fields(model) -> list[str]:
    """Fields that accept null (what --clear may name), found by asking the model itself."""
    from pydantic import ValidationError

    out = []
    for name in model.model_fields:
        try:
            model.model_validate({name: None})
        except ValidationError as exc:
            if any(err["loc"][:1] == (name,) for err in exc.errors()):
                continue
        out.append(name)
    return out


def _option(name: str, field, op: Operation) -> click.Option:
    flag = op.cli.rename.get(name, name.replace("_", "-"))
    base, many = _plain(field.annotation)
    help_text = field.description or ""
    if field.is_required() and not op.partial:
        help_text = (help_text + " [required]").strip()
    if base is bool:
        return click.Option([f"--{flag}/--no-{flag}", name], default=None, help=help_text)
    kind: click.ParamType
    if get_origin(base) is Literal:
        kind = click.Choice([str(v) for v in get_args(base)])
    elif base is int:
        kind = click.INT
    elif base is float:
        kind = click.FLOAT
    else:
        kind = click.STRING
    if base is SecretStr:
        help_text = (help_text + " ('-' reads it from stdin, keeping it out of shell history)").strip()
    if many:
        help_text = (help_text + " (repeat for several)").strip()
    return click.Option([f"--{flag}", name], type=kind, multiple=many, default=None, help=help_text,
                        metavar=None if get_origin(base) is Literal else flag.upper().replace("-", "_"))


def _collect(op: Operation, kwargs: dict) -> dict | None:
    if op.input_model is None:
        return None
    params = {}
    for name, field in op.input_model.model_fields.items():
        value = kwargs.get(name)
        if value is None or (isinstance(value, tuple) and not value):
            continue
        if _plain(field.annotation)[0] is SecretStr and value == "-":
            value = sys.stdin.readline().rstrip("\r\n")
        params[name] = list(value) if isinstance(value, tuple) else value
    for name in kwargs.get("clear") or ():
        params[name] = None
    return params


def _connection_options() -> list[click.Option]:
    return [
        click.Option(["--json", "as_json"], is_flag=True, help="print JSON for scripts"),
        click.Option(["--url", "conn_url"], envvar="NGM_URL",
                     help="talk to a running server instead of the database"),
        click.Option(["--api-key", "conn_api_key"], envvar="NGM_API_KEY",
                     help="API key (for --url, or to act as that key)"),
        click.Option(["--org", "conn_org"], envvar="NGM_ORG",
                     help="organization to act for in process (local operator)"),
    ]


def command_for(op: Operation) -> click.Command:
    # Connection options have dest names of their own: an operation's input may be called api_key too.
    def callback(conn_url, conn_api_key, conn_org, as_json, **kwargs):
        params = _collect(op, kwargs)
        resource_id = kwargs.get(op.id_param) if op.id_param else None
        try:
            result = asyncio.run(_dispatch(op, params, resource_id, conn_url, conn_api_key, conn_org))
        except NgmError as exc:
            _fail(exc)
        _show(op, result, resource_id, as_json)

    params: list[click.Parameter] = []
    if op.id_param:
        params.append(click.Argument([op.id_param]))
    if op.input_model is not None:
        params += [_option(n, f, op) for n, f in op.input_model.model_fields.items()]
        nullable = _nullable_fields(op.input_model) if op.partial else []
        if nullable:
            params.append(click.Option(["--clear", "clear"], multiple=True, type=click.Choice(nullable),
                                       help="set an optional field to null (repeat for several)"))
    params += _connection_options()
    flags = [opt for p in params for opt in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])]
    names = [p.name for p in params]
    clashes = {f for f in flags if flags.count(f) > 1} | {n for n in names if names.count(n) > 1}
    if clashes:  # e.g. an input named url against --url: rename it in the operation's CliSpec
        raise RuntimeError(f"CLI for {op.name}: {sorted(clashes)} used twice")
    return click.Command(op.cli_command, callback=callback, params=params,
                         help=f"{op.summary}. {op.description}".strip() + f"\n\nNeeds role {op.role} or stronger.",
                         short_help=op.summary)


# ---------------------------------------------------------------- the command tree

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ngm")
def main():
    """Nexus Gateway Manager: gateways, health, deployments, routing and rate limits."""
    try:
        settings_level = Settings.from_env().log_level
    except ValueError as exc:  # a variable that does not parse: named, before anything runs
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    setup_logging(settings_level if settings_level == "DEBUG" else "WARNING")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), envvar="NGM_WORKERS",
              help="server processes sharing the port (more than 1 needs NGM_REDIS_URL)")
def serve(host, port, workers):
    """Serve REST (/api/v1), MCP (/mcp) and the dashboard (/)."""
    if workers > 1:
        from ngm.workers import supervise

        sys.exit(supervise(host, port, workers))
    from ngm.server import serve as run_server

    sys.exit(run_server(host, port))


@main.command("mcp")
@click.option("--url", envvar="NGM_URL", help="forward tool calls to a running server instead of the database")
@click.option("--api-key", envvar="NGM_API_KEY", required=True, help="the key whose permissions the tools get")
def mcp_command(url, api_key):
    """Serve the MCP tools over stdio for agent hosts."""
    from ngm.channels.mcp_stdio import run_stdio

    try:
        sys.exit(run_stdio(api_key, url))
    except NgmError as exc:
        _fail(exc)


def _event_line(event: dict) -> str:
    data = event.get("data", {})
    if event["type"] == "health.transition":
        text = (f"{data.get('gateway_name') or data.get('gateway_id')} {data['from_health']} -> {data['to_health']}"
                f" ({data['from_status']} -> {data['to_status']}): {data.get('reason', '')}")
    elif event["type"] == "health.probe":
        text = (f"{data['gateway_id']} {data['outcome']} {data['response_time_ms']:.1f}ms -> {data['status']}"
                f" ({data['gateway_status']})")
    else:
        text = json.dumps(data, ensure_ascii=False)
    return f"{event['occurred_at']} {event['type']} {text}"


@click.command("tail")
@click.option("--types", help="comma-separated: health.transition,health.probe (default both)")
@click.option("--gateway-id", help="only this gateway")
@click.option("--count", type=click.IntRange(1), help="stop after this many events")
@click.option("--json", "as_json", is_flag=True, help="one JSON object a line")
@click.option("--url", "conn_url", envvar="NGM_URL", required=True, help="the running server")
@click.option("--api-key", "conn_api_key", envvar="NGM_API_KEY", required=True)
def events_tail(types, gateway_id, count, as_json, conn_url, conn_api_key):
    """Follow the live event stream of a running server (Server-Sent Events)."""
    import httpx

    from ngm.channels.client import error_from_response

    params = {k: v for k, v in (("types", types), ("gateway_id", gateway_id)) if v}
    seen = 0
    try:
        with httpx.stream("GET", conn_url.rstrip("/") + "/api/v1/events", params=params, timeout=None,
                          headers={"X-API-Key": conn_api_key, "Accept": "text/event-stream"}) as resp:
            if resp.status_code >= 400:
                resp.read()
                _fail(error_from_response(resp))
            for line in resp.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[len("data: "):])
                click.echo(json.dumps(event, ensure_ascii=False) if as_json else _event_line(event))
                seen += 1
                if count and seen >= count:
                    return
    except httpx.HTTPError as exc:
        click.echo(f"Error: cannot reach {conn_url}: {type(exc).__name__}", err=True)
        sys.exit(6)
    except KeyboardInterrupt:
        pass


def _build_tree() -> None:
    registry = load_operations()
    groups: dict[str, click.Group] = {}
    for op in registry:
        group = groups.get(op.resource)
        if group is None:
            group = groups[op.resource] = click.Group(op.resource, help=f"Manage {op.resource}.")
            main.add_command(group)
        group.add_command(command_for(op))
    groups["keys"].add_command(rotate_encryption)
    groups["events"].add_command(events_tail)


@click.command("rotate-encryption")
@click.option("--prune", is_flag=True, help="key file only: remove the old keys once nothing needs them")
@click.option("--json", "as_json", is_flag=True)
def rotate_encryption(prune, as_json):
    """Re-encrypt every stored secret (gateway keys, webhook signing secrets) under the newest encryption key
    (no downtime)."""
    from ngm.nodes.secrets.rotation import rotate_encryption as rotate

    try:
        result = asyncio.run(rotate(Settings.from_env(), prune=prune))
    except NgmError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"re-encrypted {result['reencrypted']} stored secret(s) (gateway keys and webhook secrets); "
                   f"{result['source']} now holds {result['keys']} key(s)")
        if result["left_under_other_keys"]:
            click.echo(f"warning: {result['left_under_other_keys']} stored secret(s) are under a key other than the "
                       "newest: run it again before removing old keys", err=True)


_build_tree()
