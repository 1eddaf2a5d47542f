"""`sam build` of template.yaml (no Docker: the local python3.11 and pip fetch the arm64 wheels), then the measured
unzipped size of every function with its layers against Lambda's 250 MB limit, what each function imports against
what its layers ship, and that the slimmed pyarrow and numpy layers still find the libraries they link (numpy also
imports, built for the host from the same Makefile).

The build caches under freezeframe.contracts.config.cache_dir() (sam's build cache, and pip's own cache), so only the
first
run downloads wheels; the build itself goes into a temporary directory.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from freezeframe.contracts.config import cache_dir

pytestmark = pytest.mark.integration

cfnlint_decode = pytest.importorskip("cfnlint.decode", reason="cfn-lint is not installed (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_UNZIPPED_LIMIT = 262_144_000  # bytes: "250 MB" for a function and all its layers, unzipped
BUILD_TIMEOUT_S = 900
MB = 1024 * 1024
# Provided by the python3.11 Lambda runtime itself.
RUNTIME_MODULES = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six", "awslambdaric"}


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sam = Path(sys.executable).parent / "sam"
    if not sam.exists():
        pytest.skip(f"sam is not installed next to {sys.executable} (pip install -e '.[dev]')")
    venv_bin = str(Path(sys.executable).parent)
    if shutil.which("python3.11", path=venv_bin + os.pathsep + os.environ.get("PATH", "")) is None:
        pytest.skip("sam builds the python3.11 runtime with a local python3.11, and there is none on PATH")
    work = tmp_path_factory.mktemp("sam")
    (work / "metadata.json").write_text(json.dumps({"lastVersionCheck": time.time(), "telemetryEnabled": False}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # The venv's python3.11 first: it has pip, and it is the interpreter sam's Python workflow looks for.
    env.update(PATH=venv_bin + os.pathsep + env.get("PATH", ""), SAM_CLI_TELEMETRY="0", __SAM_CLI_APP_DIR=str(work),
               AWS_DEFAULT_REGION="us-east-1", PYTHON=str(Path(venv_bin) / "python3.11"))
    out = work / "build"
    command = [str(sam), "build", "--template-file", str(ROOT / "template.yaml"), "--build-dir", str(out),
               "--cache-dir", str(cache_dir() / "sam-build"), "--cached", "--parallel"]
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    print(f"sam build: exit {result.returncode} in {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, f"sam build failed\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return out


def _tree_bytes(path: Path) -> int:
    return sum((Path(d) / f).lstat().st_size for d, _, files in os.walk(path) for f in files)


def _functions(built: dict[str, Any]) -> Iterator[tuple[str, Path, list[Path]]]:
    """(logical id, code folder, layer folders) of every function in the built template."""
    resources = built["Resources"]
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        layers = [resources[layer["Ref"]]["Properties"]["ContentUri"] for layer in props.get("Layers", [])]
        yield name, Path(props["CodeUri"]), [Path(layer) for layer in layers]


@pytest.fixture(scope="module")
def built(build: Path) -> dict[str, Any]:
    parsed, matches = cfnlint_decode.decode(str(build / "template.yaml"))
    assert not matches and parsed is not None
    for resource in parsed["Resources"].values():  # paths in the built template are relative to it
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = str(build / props[key])
    return parsed


def test_every_function_with_its_layers_fits_lambdas_unzipped_limit(built: dict[str, Any]) -> None:
    functions = list(_functions(built))
    assert len(functions) >= 6, [name for name, _, _ in functions]
    print(f"\n{'function':28} {'code':>8} {'layers':>9} {'total':>9}  (limit {LAMBDA_UNZIPPED_LIMIT / MB:.0f} MiB)")
    for name, code, layers in functions:
        assert code.is_dir(), f"{name}: {code} was not built"
        code_bytes = _tree_bytes(code)
        layer_bytes = sum(_tree_bytes(layer) for layer in layers)
        total = code_bytes + layer_bytes
        print(f"{name:28} {code_bytes / MB:7.1f}M {layer_bytes / MB:8.1f}M {total / MB:8.1f}M")
        assert total < LAMBDA_UNZIPPED_LIMIT, f"{name} unzips to {total / MB:.1f} MiB with its layers"


def test_no_function_ships_kubernetes_or_the_agent(built: dict[str, Any]) -> None:
    for name, code, layers in _functions(built):
        for folder in [code, *[layer / "python" for layer in layers]]:
            shipped = {p.name for p in folder.iterdir()}
            assert not shipped & {"kubernetes", "freezeframe_agent", "scapy", "kafka"}, (name, folder)


def _module_file(roots: list[Path], module: str) -> Path | None:
    parts = module.split(".")
    for root in roots:
        for candidate in (root.joinpath(*parts, "__init__.py"), root.joinpath(*parts).with_suffix(".py")):
            if candidate.is_file():
                return candidate
    return None


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(every module imported anywhere in the file, the top-level packages imported at module level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module_level = {id(node) for node in tree.body}
    anywhere: set[str] = set()
    top_level: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        anywhere.update(names)
        if id(node) in module_level:
            top_level.update(name.split(".")[0] for name in names)
    return anywhere, top_level


def _reached(code: Path, roots: list[Path]) -> set[Path]:
    """Every freezeframe module the handler in `code` imports, directly or through others (lazy imports too)."""
    seen: set[Path] = set()
    queue = [code / "app.py"]
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path)[0]:
            if module.split(".")[0] == "freezeframe" and (found := _module_file(roots, module)):
                queue.append(found)
    return seen


def test_every_module_a_handler_reaches_is_shipped_with_it(built: dict[str, Any]) -> None:
    """Follow the freezeframe modules each handler imports (lazy imports too) and require every third-party
    package they import at module level from the function's own layers (or the runtime)."""
    for name, code, layers in _functions(built):
        roots = [code, *[layer / "python" for layer in layers]]
        shipped = {p.name.removesuffix(".py") for root in roots for p in root.iterdir()}
        reached = _reached(code, roots)
        missing: dict[str, set[str]] = {}
        for path in reached:
            for package in _imports(path)[1] - {"freezeframe", "__future__"}:
                if package not in shipped and package not in sys.stdlib_module_names and \
                        package not in RUNTIME_MODULES:
                    missing.setdefault(package, set()).add(str(path.relative_to(path.parents[2])))
        assert not missing, f"{name} imports packages none of its layers ship: {missing}"
        print(f"{name}: {len(reached)} modules reached")


def test_slimmed_pyarrow_still_finds_every_arrow_library_it_links(built: dict[str, Any]) -> None:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    pyarrow_dir = Path(built["Resources"]["DepsLayer"]["Properties"]["ContentUri"]) / "python" / "pyarrow"
    assert pyarrow_dir.is_dir()
    present = {p.name for p in pyarrow_dir.iterdir()}
    assert not {name for name in present if "flight" in name}, "the slimming (layers/deps/Makefile) did not run"
    checked = 0
    for library in pyarrow_dir.glob("*.so*"):
        dynamic = subprocess.run([readelf, "-d", str(library)], capture_output=True, text=True, check=True).stdout
        for needed in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic):
            if needed.startswith(("libarrow", "libparquet")):
                checked += 1
                assert needed in present, f"{library.name} links {needed}, which the slimmed layer lacks"
    assert checked, "no Arrow library links found: the check is broken"


def _imports_numpy(path: Path) -> bool:
    """Whether the module imports numpy anywhere (inside a function too)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "numpy" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "numpy" and not node.level:
            return True
    return False


def test_every_function_that_dissects_ships_numpy(built: dict[str, Any]) -> None:
    """The dissection's vectorised hot path needs numpy, even where it imports it lazily (which the module-level
    check above does not follow): every function that reaches a module importing numpy ships it. (Finalize reaches
    the dissect package for its views, which need no numpy: tests/unit/dissect/test_observers.py runs them with
    numpy blocked.)"""
    dissecting = []
    for name, code, layers in _functions(built):
        roots = [code, *[layer / "python" for layer in layers]]
        if not any(_imports_numpy(path) for path in _reached(code, roots)):
            continue
        dissecting.append(name)
        assert any((root / "numpy" / "__init__.py").is_file() for root in roots), f"{name} dissects without numpy"
    assert "DissectFunction" in dissecting, "the dissect handler reaches no dissect module: the check is broken"


# What the manylinux2014 policy lets a wheel link from the system (auditwheel bundles everything else), plus zlib:
# numpy's bundled libgfortran links it, and the Lambda python images ship it for CPython's own zlib module.
SYSTEM_LIBRARIES = {
    "libgcc_s.so.1", "libstdc++.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libc.so.6", "libnsl.so.1",
    "libutil.so.1", "libpthread.so.0", "libresolv.so.2", "ld-linux-aarch64.so.1", "ld-linux-x86-64.so.2", "libz.so.1",
}


def test_slimmed_numpy_still_finds_every_library_it_links(built: dict[str, Any]) -> None:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    site = Path(built["Resources"]["NumpyLayer"]["Properties"]["ContentUri"]) / "python"
    assert (site / "numpy" / "__init__.py").is_file()
    assert not (site / "numpy" / "f2py").exists(), "the slimming (layers/numpy/Makefile) did not run"
    bundled = {p.name for p in (site / "numpy.libs").iterdir()}
    checked = 0
    for library in [*(site / "numpy").rglob("*.so"), *(site / "numpy.libs").iterdir()]:
        dynamic = subprocess.run([readelf, "-d", str(library)], capture_output=True, text=True, check=True).stdout
        for needed in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic):
            checked += needed in bundled
            assert needed in bundled or needed in SYSTEM_LIBRARIES, f"{library.name} links {needed}"
    assert checked, "no link to numpy.libs found (numpy.linalg links OpenBLAS there): the check is broken"


def test_slimmed_numpy_layer_imports_and_computes(tmp_path: Path) -> None:
    """The layer's arm64 build cannot run here, so build the same Makefile for the host's manylinux2014 platform and
    use that numpy alone (no site-packages): the slimming must leave everything an import and linalg need."""
    python = Path(sys.executable).parent / "python3.11"
    if shutil.which("make") is None or not python.exists():
        pytest.skip("needs make and the venv's python3.11")
    source = shutil.copytree(ROOT / "layers" / "numpy", tmp_path / "src")
    subprocess.run(["make", "build-NumpyLayer", f"ARTIFACTS_DIR={tmp_path / 'out'}", f"PYTHON={python}",
                    f"PLATFORM=manylinux2014_{platform.machine()}"], cwd=source, check=True, timeout=BUILD_TIMEOUT_S)
    site = tmp_path / "out" / "python"
    assert not (site / "numpy" / "_core" / "include").exists()
    # 2x + y = 3 and x + 3y = 5 give x = 0.8, y = 1.4. numpy.testing imports numpy/_core/tests/_natype.py.
    probe = ("import numpy, numpy.testing; "
             "print(numpy.__file__); print(numpy.linalg.solve([[2.0, 1.0], [1.0, 3.0]], [3.0, 5.0]).round(6).tolist())")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site)}
    result = subprocess.run([str(python), "-S", "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    imported_from, solution = result.stdout.splitlines()
    assert Path(imported_from).is_relative_to(site), imported_from
    assert solution == "[0.8, 1.4]"


GLIBC_OF_LAMBDA_PYTHON = (2, 26)  # the template's python3.11 runtime runs on Amazon Linux 2


def _glibc_needs(library: Path) -> tuple[int, int]:
    objdump = shutil.which("objdump")
    assert objdump is not None
    symbols = subprocess.run([objdump, "-T", str(library)], capture_output=True, text=True, check=True).stdout
    versions = [tuple(int(part) for part in found.split(".")[:2]) for found in re.findall(r"GLIBC_(\d+\.\d+(?:\.\d+)?)",
                                                                                            symbols)]
    return max(versions, default=(0, 0))  # type: ignore[return-value]


def test_native_layer_ships_the_compiled_core_for_the_runtime(built: dict[str, Any]) -> None:
    """The dissect function's NativeLayer holds the abi3 extension, built for the template's architecture, needing
    no newer glibc than the Lambda runtime has and no shared library outside the runtime's base system."""
    if shutil.which("objdump") is None or shutil.which("readelf") is None:
        pytest.skip("objdump and readelf (binutils) are not installed")
    layer = Path(built["Resources"]["NativeLayer"]["Properties"]["ContentUri"]) / "python"
    libraries = list(layer.glob("freezeframe_native/*.so"))
    assert len(libraries) == 1, list(layer.rglob("*"))
    library = libraries[0]
    assert library.name.endswith(".abi3.so"), library.name
    header = subprocess.run(["readelf", "-h", str(library)], capture_output=True, text=True, check=True).stdout
    assert "AArch64" in header, header  # the template's Architectures: [arm64]
    assert _glibc_needs(library) <= GLIBC_OF_LAMBDA_PYTHON
    dynamic = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))
    assert needed <= {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1",
                      "ld-linux-aarch64.so.1"}, needed
    dissect = built["Resources"]["DissectFunction"]["Properties"]
    assert {"Ref": "NativeLayer"} in dissect["Layers"]


def test_native_layer_imports_and_dissects_when_built_for_the_host(tmp_path: Path) -> None:
    """The arm64 layer cannot run here: build the same Makefile (zig, manylinux2014) for the host and import the
    wheel from the layer folder alone, then dissect the fixture capture with it."""
    python = Path(sys.executable).parent / "python3.11"
    if shutil.which("make") is None or shutil.which("cargo") is None or not python.exists():
        pytest.skip("needs make, cargo and the venv's python3.11")
    source = shutil.copytree(ROOT / "layers" / "native", tmp_path / "src", ignore=shutil.ignore_patterns("target"))
    subprocess.run(["make", "build-NativeLayer", f"ARTIFACTS_DIR={tmp_path / 'out'}", f"PYTHON={python}",
                    f"TARGET={platform.machine()}-unknown-linux-gnu"], cwd=source, check=True,
                   timeout=BUILD_TIMEOUT_S)
    site = tmp_path / "out" / "python"
    probe = ("import sys, freezeframe_native as n; e = n.Engine('n'); e.feed(open(sys.argv[1], 'rb').read()); "
             "print(n.__file__); print(n.walk(open(sys.argv[1], 'rb').read())[0], e.stats()['decoded'])")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site)}
    sample = ROOT / "tests" / "fixtures" / "sample.pcap"
    result = subprocess.run([str(python), "-S", "-c", probe, str(sample)], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    imported_from, counts = result.stdout.splitlines()
    assert Path(imported_from).is_relative_to(site), imported_from
    packets, decoded = (int(v) for v in counts.split())
    tshark = shutil.which("tshark")
    if tshark is not None:  # tshark is the reference for the packet count
        frames = subprocess.run([tshark, "-n", "-r", str(sample), "-T", "fields", "-e", "frame.number"],
                                capture_output=True, text=True, check=True).stdout.split()
        assert packets == len(frames)
    assert 0 < decoded <= packets


def _another_venv(where: Path) -> Path:
    """A second venv whose python and maturin are at other paths than this one's (as in a new clone), using this
    venv's packages through a .pth file rather than downloading them again."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    site = Path(subprocess.run([str(where / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path("
                                "'purelib'))"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "this-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    maturin = Path(sysconfig.get_path("scripts")) / "maturin"
    shutil.copy2(maturin, where / "bin" / "maturin")
    return where / "bin" / "python3.11"


def test_native_layer_built_from_another_venv_recompiles_nothing(tmp_path: Path) -> None:
    """cargo's cache outlives the venv: once the layer is built, a build of the same sources from another venv (each
    CI clone makes one) finds every crate fresh. The venv's path used to reach cargo's fingerprint twice: through
    PYO3_PYTHON, and through the path of maturin's zig linker wrappers (named after the running maturin's path)."""
    python = Path(sys.executable).parent / "python3.11"
    if shutil.which("make") is None or shutil.which("cargo") is None or not python.exists():
        pytest.skip("needs make, cargo and the venv's python3.11")
    if not (Path(sysconfig.get_path("scripts")) / "maturin").exists():
        pytest.skip("needs maturin in this venv (pip install -e '.[dev]')")
    target = f"TARGET={platform.machine()}-unknown-linux-gnu"
    source = shutil.copytree(ROOT / "layers" / "native", tmp_path / "src", ignore=shutil.ignore_patterns("target"))
    subprocess.run(["make", "build-NativeLayer", f"ARTIFACTS_DIR={tmp_path / 'first'}", f"PYTHON={python}", target],
                   cwd=source, check=True, timeout=BUILD_TIMEOUT_S)
    other = _another_venv(tmp_path / "venv")
    env = {**os.environ, "CARGO_LOG": "cargo::core::compiler::fingerprint=debug"}
    second = subprocess.run(["make", "build-NativeLayer", f"ARTIFACTS_DIR={tmp_path / 'second'}", f"PYTHON={other}",
                             target], cwd=source, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    checked = [line for line in log.splitlines() if "fingerprint at:" in line and "freezeframe_native" in line]
    assert checked, log[-3000:]  # cargo did check the core's fingerprint (the log is not silent)
    dirty = [line for line in log.splitlines() if "fingerprint dirty" in line or "dirty:" in line]
    assert not dirty, "\n".join(dirty[:10])
    assert list((tmp_path / "second" / "python").glob("freezeframe_native/*.so"))
