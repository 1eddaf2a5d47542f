"""The house rules that are checked by reading the source (issue 12, "Done when"):

- no module outside config.py reads or writes the environment;
- no handler function in functions/*/app.py is longer than 60 lines;
- no module outside adapters/ calls a boto3 client, except the documented modules of BOTO3_OUTSIDE_ADAPTERS, a
  list that may only shrink;
- no core module outside adapters/ opens another network path either: pyarrow's S3 filesystem, urllib.request,
  http.client, a socket connection, the trino client, DuckDB's httpfs extension or its s3_ settings (the local
  tooling in layers/local keeps its own).
- no module outside contracts/keys.py spells an object key: a string or f-string that starts with one of the
  layout's roots (incidents/, tables/, raw/, ...) is built there (docstrings may describe the layout).

The source is parsed (ast), so a string that merely mentions os.environ (the LocalStack launcher script in
freezeframe_local/s3.py, which runs in LocalStack's own Python) is not a read.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import botocore.session
import pytest
from botocore import xform_name

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "layers" / "core" / "freezeframe"
LOCAL = REPO / "layers" / "local" / "freezeframe_local"
SOURCE_ROOTS = (CORE, LOCAL, REPO / "node_agent" / "freezeframe_agent", REPO / "functions")
# The one module that reads the environment (Settings.from_env, cache_dir, and the local tooling's child_env /
# export_env / pyenv_root_override).
ENV_MODULES = {CORE / "contracts" / "config.py"}
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv", "expandvars"}
ENV_SOURCE_MODULES = ("os", "posix", "os.path", "posixpath")
HANDLER_MAX_LINES = 60
ADAPTERS = CORE / "adapters"
# Every boto3 client call outside adapters/. Issue 12 (item 2) moved the core's calls behind the adapters' typed
# interfaces; what is left is local tooling only. The list may only shrink, and a module that no longer calls a
# client must leave it (test_the_boto3_allow_list_only_shrinks).
BOTO3_OUTSIDE_ADAPTERS = {
    "layers/local/freezeframe_local/s3.py":
        "local tooling: the local S3's client, buckets and the Object Lock probe, whose whole point is to try what "
        "product code must never do (delete a locked version, bypass governance) against the local endpoint; it "
        "ships with the local stack, not with a function",
}
# Client methods that take positional arguments (the service operations themselves are keyword-only).
CLIENT_HELPERS = {"get_paginator", "get_waiter", "generate_presigned_url", "upload_file", "upload_fileobj",
                  "download_file", "download_fileobj"}
SERVICES = ("s3", "athena", "glue", "lambda", "stepfunctions", "secretsmanager", "kms", "sts")


def _modules() -> Iterator[Path]:
    for root in SOURCE_ROOTS:
        yield from sorted(root.rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _env_uses(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ENV_NAMES:
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module in ENV_SOURCE_MODULES and \
                any(alias.name in ENV_NAMES for alias in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" and \
                len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and node.args[1].value in ENV_NAMES:
            lines.append(node.lineno)
    return lines


def test_no_module_outside_config_reads_the_environment() -> None:
    offenders = {str(path.relative_to(REPO)): lines for path in _modules() if path not in ENV_MODULES
                 if (lines := _env_uses(_tree(path)))}
    assert not offenders, f"environment access outside config.py (file: lines): {offenders}"


def test_the_env_rule_sees_an_environment_read() -> None:
    # The check itself must catch each spelling of a read.
    for source in ("import os\nos.environ.get('X')", "import os\nos.getenv('X')", "from os import environ",
                   "import os\nenv = dict(os.environ)", "import os\ngetattr(os, 'environ')",
                   "import os\nos.path.expandvars('$HOME')", "from os.path import expandvars"):
        assert _env_uses(ast.parse(source)), source
    assert not _env_uses(ast.parse("LAUNCHER = 'os.environ[\"X\"]'"))


def _handler_functions() -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef, int]]:
    for app in sorted((REPO / "functions").glob("*/app.py")):
        for node in ast.walk(_tree(app)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                assert node.end_lineno is not None
                yield f"{app.parent.name}/app.py:{node.name}", node, node.end_lineno - first + 1


def test_every_handler_is_at_most_60_lines() -> None:
    found = list(_handler_functions())
    assert sum(name.endswith(":lambda_handler") for name, _, _ in found) == len(list(REPO.glob("functions/*/app.py")))
    too_long = {name: lines for name, _, lines in found if lines > HANDLER_MAX_LINES}
    assert not too_long, f"handler functions over {HANDLER_MAX_LINES} lines (decorators included): {too_long}"


def _client_operations() -> set[str]:
    """The method names of the boto3 clients freezeframe uses, from botocore's own service models."""
    session = botocore.session.get_session()
    return {xform_name(name) for service in SERVICES for name in session.get_service_model(service).operation_names}


OPERATIONS = _client_operations()


def _client_calls(tree: ast.Module) -> list[str]:
    """boto3 use: importing boto3, or calling a client method (a service operation is keyword-only, so a call with
    positional arguments is something else, e.g. a signature's `key.verify(signature, digest, ...)`)."""
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            calls += [f"{node.lineno}: import {name}" for name in names
                      if name.split(".")[0] == "boto3" or name.startswith("botocore.session")]
            if isinstance(node, ast.ImportFrom) and node.module == "botocore":
                calls += [f"{node.lineno}: from botocore import session" for a in node.names if a.name == "session"]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                node.func.attr in CLIENT_HELPERS or node.func.attr == "create_client" or
                (node.func.attr in OPERATIONS and not node.args)):
            calls.append(f"{node.lineno}: {ast.unparse(node.func)}")
    return calls


def _boto3_outside_adapters() -> dict[str, list[str]]:
    found = {}
    for path in _modules():
        if ADAPTERS in path.parents:
            continue
        if calls := _client_calls(_tree(path)):
            name = str(path.relative_to(CORE)) if CORE in path.parents else str(path.relative_to(REPO))
            found[name] = calls
    return found


def test_no_boto3_client_outside_adapters_beyond_the_allow_list() -> None:
    new = {name: calls for name, calls in _boto3_outside_adapters().items() if name not in BOTO3_OUTSIDE_ADAPTERS}
    assert not new, f"boto3 client calls outside adapters/ (put them behind an adapter): {new}"


def test_the_boto3_allow_list_only_shrinks() -> None:
    paid = sorted(set(BOTO3_OUTSIDE_ADAPTERS) - set(_boto3_outside_adapters()))
    assert not paid, f"these modules no longer call a boto3 client: remove them from BOTO3_OUTSIDE_ADAPTERS: {paid}"


@pytest.mark.parametrize("source", ["import boto3", "s3.put_object(Bucket='b', Key='k', Body=b'')",
                                    "s3.get_paginator('list_object_versions')", "athena.get_query_execution(**kw)",
                                    "from botocore.session import Session", "from botocore import session",
                                    "session.create_client('s3', region_name='r')"])
def test_the_boto3_rule_sees_a_client_call(source: str) -> None:
    assert _client_calls(ast.parse(source))


def test_the_boto3_rule_leaves_other_calls_alone() -> None:
    assert not _client_calls(ast.parse("key.verify(signature, digest, algorithm)\ninvoke_auth.verify(a, b)\n"
                                       "from botocore.exceptions import ClientError\n"
                                       "from botocore.auth import SigV4Auth"))


def test_only_local_tooling_stays_on_the_boto3_allow_list() -> None:
    # Issue 12: no core module outside adapters/ touches a boto3 client; the local stack's tooling ships apart.
    assert all(name.startswith("layers/local/") for name in BOTO3_OUTSIDE_ADAPTERS), sorted(BOTO3_OUTSIDE_ADAPTERS)


# Network paths other than boto3 that only adapters/ may open. Modules whose import is the network path itself:
NETWORK_MODULES = {"urllib.request", "http.client", "trino", "requests", "httpx", "aiohttp", "urllib3"}
# Names that open a connection (or resolve a name over the network), whatever module they come from:
NETWORK_NAMES = {"S3FileSystem", "create_connection", "create_server", "getaddrinfo", "gethostbyname",
                 "gethostbyname_ex", "urlopen"}
SOCKET_MODULES = {"socket", "_socket"}
# DuckDB's own S3 reader: its extension and its settings, as SQL or as a connection's config.
DUCKDB_NETWORK_SQL = re.compile(r"\b(INSTALL|LOAD)\s+httpfs\b|\b(SET|RESET)\s+(GLOBAL\s+|SESSION\s+)?s3_\w+"
                                r"|\bCREATE\s+(OR\s+REPLACE\s+)?(PERSISTENT\s+|TEMPORARY\s+)?SECRET\b", re.IGNORECASE)


def _imported_module(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level or not node.module:
        return []
    return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]


def _network_uses(tree: ast.Module) -> list[str]:
    """Network paths other than a boto3 client: importing a network client module, naming a connection opener
    (pyarrow's S3FileSystem, socket.create_connection, urlopen, ...), a socket object (socket.socket), DuckDB's
    httpfs extension (installed, loaded, or its SQL) and its s3_ settings (SET s3_region, config={"s3_...": ...})."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _imported_module(node):
                if any(name == module or name.startswith(f"{module}.") for module in NETWORK_MODULES):
                    uses.append(f"{node.lineno}: import {name}")
            if isinstance(node, ast.ImportFrom) and node.module in SOCKET_MODULES:
                uses += [f"{node.lineno}: from {node.module} import {a.name}" for a in node.names
                         if a.name in ("socket", "*") or a.name in NETWORK_NAMES]
            elif isinstance(node, ast.ImportFrom):
                uses += [f"{node.lineno}: from {node.module} import {a.name}" for a in node.names
                         if a.name in NETWORK_NAMES]
        elif isinstance(node, ast.Attribute) and (node.attr in NETWORK_NAMES or node.attr == "socket" and isinstance(
                node.value, ast.Name) and node.value.id in SOCKET_MODULES):
            uses.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DUCKDB_NETWORK_SQL.search(node.value):
            uses.append(f"{node.lineno}: DuckDB S3/httpfs SQL {node.value[:60]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "install_extension", "load_extension") and any(
                isinstance(a, ast.Constant) and a.value == "httpfs" for a in node.args):
            uses.append(f"{node.lineno}: {ast.unparse(node.func)}('httpfs')")
        elif isinstance(node, ast.Dict):
            uses += [f"{node.lineno}: DuckDB setting {key.value!r}" for key in node.keys
                     if isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value.startswith("s3_")]
    return uses


def _network_outside_adapters() -> dict[str, list[str]]:
    return {str(path.relative_to(CORE)): uses for path in sorted(CORE.rglob("*.py")) if ADAPTERS not in path.parents
            if (uses := _network_uses(_tree(path)))}


def test_no_core_module_outside_adapters_opens_another_network_path() -> None:
    found = _network_outside_adapters()
    assert not found, f"network paths outside adapters/ (put them behind an adapter): {found}"


@pytest.mark.parametrize("source", [
    "from pyarrow import fs\nfs.S3FileSystem(region='r')", "import pyarrow.fs as pafs\npafs.S3FileSystem()",
    "from pyarrow.fs import S3FileSystem", "import urllib.request", "from urllib.request import urlopen",
    "from urllib import request", "import http.client", "from http.client import HTTPSConnection",
    "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)", "import socket\nsocket.create_connection(a)",
    "from socket import socket", "from socket import create_connection", "import trino",
    "import trino.dbapi", "from trino.dbapi import connect", "from trino import dbapi",
    "con.execute('INSTALL httpfs')", "con.execute('LOAD httpfs')", "con.execute(\"SET s3_region='eu-west-1'\")",
    "con.execute(f\"SET s3_endpoint='{host}'\")", "con.execute(\"CREATE SECRET (TYPE s3, KEY_ID 'k')\")",
    "con.install_extension('httpfs')", "duckdb.connect(config={'s3_region': 'eu-west-1'})",
])
def test_the_network_rule_sees_each_path(source: str) -> None:
    assert _network_uses(ast.parse(source)), source


def test_the_network_rule_leaves_local_uses_alone() -> None:
    # A host name, an address conversion, URL parsing, DuckDB in memory and Trino's own catalog properties (a dict
    # of settings sent as SQL to the adapter) are not network paths of their own.
    source = ("import socket\nsocket.gethostname()\nsocket.inet_ntop(socket.AF_INET, b'1234')\n"
              "from urllib.parse import urlparse\nimport duckdb\ncon = duckdb.connect()\n"
              "con.execute(\"SET TimeZone='UTC'\")\nproperties = {'s3.endpoint': url}\n"
              "settings.s3_endpoint\nENDPOINT = 'FREEZEFRAME_S3_ENDPOINT'")
    assert not _network_uses(ast.parse(source))


def _bypass_arguments(tree: ast.Module) -> list[int]:
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.keyword) and node.arg == "BypassGovernanceRetention"]


def test_no_product_module_asks_for_a_governance_bypass() -> None:
    # Only the local stack's Object Lock probe sends the header, to prove the endpoint refuses it.
    offenders = {str(path.relative_to(REPO)): lines for path in _modules()
                 if LOCAL not in path.parents and (lines := _bypass_arguments(_tree(path)))}
    assert not offenders, f"BypassGovernanceRetention passed outside local/: {offenders}"
    assert _bypass_arguments(ast.parse("s3.delete_object(Bucket='b', Key='k', BypassGovernanceRetention=True)"))


def _imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_never_imports_the_agent_or_the_local_tooling() -> None:
    offenders = {str(path.relative_to(REPO)): sorted(found) for path in sorted(CORE.rglob("*.py"))
                 if (found := _imports(_tree(path)) & {"freezeframe_agent", "freezeframe_local"})}
    assert not offenders, f"the core (a Lambda layer) imports a package its layers do not ship: {offenders}"


def test_the_import_rule_sees_an_import() -> None:
    assert _imports(ast.parse("import freezeframe_local.cli\nfrom freezeframe_agent.jobs import x")) == {
        "freezeframe_local", "freezeframe_agent"}


KEYS_MODULE = CORE / "contracts" / "keys.py"
KEY_ROOTS = ("raw/", "incidents/", "tables/", "views/", "nodestate/", "index/", "holds/", "legal-holds/", "jobs/",
             "k8s/")


def _spelled_keys(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, text) of each string (a regex's too), or f-string's leading text, that starts with a key root, and of
    the key in an s3://{bucket}/<key> URL; docstrings excepted."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))
    found = []
    for node in ast.walk(tree):  # breadth first: an f-string is seen before the constants inside it
        if isinstance(node, ast.JoinedStr):
            skip.update(id(value) for value in node.values)
            texts = [str(v.value) if isinstance(v, ast.Constant) else None for v in node.values]
            if texts and texts[0] is not None and texts[0].lstrip("^").startswith(KEY_ROOTS):
                found.append((node.lineno, texts[0]))
            elif texts and texts[0] == "s3://":  # s3://{bucket}/<key>: the key after the bucket
                found += [(node.lineno, text) for text in texts[2:3] if text and text[1:].startswith(KEY_ROOTS)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip and \
                node.value.lstrip("^").startswith(KEY_ROOTS):
            found.append((node.lineno, node.value))
    return found


def test_every_object_key_is_spelled_in_keys() -> None:
    offenders = {f"{path.relative_to(REPO)}:{line}": text for path in _modules() if path != KEYS_MODULE
                 for line, text in _spelled_keys(_tree(path))}
    assert not offenders, f"object keys built outside freezeframe.contracts.keys: {offenders}"


def test_the_key_rule_sees_a_key_and_leaves_docstrings_alone() -> None:
    source = ('"""Writes incidents/<id>/x.json."""\nA = f"incidents/{i}/x.json"\nB = "tables/"\n'
              'C = f"{url}/incidents/{i}"\ndef f():\n    """reads holds/<day>/"""\n'
              'D = f"s3://{bucket}/tables/"\nE = re.compile(r"^jobs/(?P<job>[^/]+)/")\n')
    assert _spelled_keys(ast.parse(source)) == [(2, "incidents/"), (3, "tables/"), (7, "/tables/"),
                                                 (8, "^jobs/(?P<job>[^/]+)/")]
