"""Environments from specs: parsing and every error, the pins, pip's configuration and reports, the uv and
pip command lines, and the cache (keys, no rebuild, no half-built folder used, two builders at once),
on a fake resolver and builder. One slow test builds a real one-package environment from disk."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from perf import env_cache, envs, installers
from perf.envs import Source, SpecKind
from perf.errors import UsageError
from perf.installers import PipConfig, PipResolver, Resolution

NUMPY = importlib.metadata.version("numpy")
PYTEST = importlib.metadata.version("pytest")

# `python -m pip config list` on the development VM (2026-12-03).
MACHINE_LISTING = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.disable-pip-version-check='1'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
"""

# What pip's dry run prints on stderr when it fails (pip 23.2, abridged).
UNKNOWN_PACKAGE = """\
ERROR: Could not find a version that satisfies the requirement nosuchpkg-zz9==1.0 (from versions: none)
ERROR: No matching distribution found for nosuchpkg-zz9==1.0
"""
NO_SUCH_VERSION = """\
WARNING: Location 'file:///opt/pypi-more/simple/numpy/' is ignored: it is neither a file nor a directory.
ERROR: Ignored the following versions that require a different python version: 2.5.0 Requires-Python >=3.12
ERROR: Could not find a version that satisfies the requirement numpy==9.9 (from versions: 1.26.4, 2.2.6, 2.4.6)
ERROR: No matching distribution found for numpy==9.9
"""
CONFLICT = """\
ERROR: Cannot install scipy<1.0 and scipy==1.17.1 because these package versions have conflicting dependencies.
ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""


def pip_report(distributions: dict[str, str]) -> str:
    return json.dumps({"version": "1", "install": [
        {"metadata": {"name": name, "version": version},
         "download_info": {"url": f"file:///wheels/{name}-{version}-py3-none-any.whl"}}
        for name, version in distributions.items()]})


def canned_run(returncode: int = 0, stdout: str = "", stderr: str = "", calls: list | None = None):
    def run(command, **kwargs):
        if calls is not None:
            calls.append(command)
        return subprocess.CompletedProcess(command, returncode, stdout, stderr)
    return run


class FakeResolver:
    """Resolves each requirement to its pinned version (or 1.0), plus a dependency 'dep-of-all'."""

    identity = "fake"

    def __init__(self):
        self.calls = []

    def resolve(self, requirements):
        self.calls.append(list(requirements))
        found = {"dep-of-all": "0.1"}
        for line in requirements:
            req = Requirement(line)
            pins = [s.version for s in req.specifier if s.operator == "=="]
            found[req.name.lower()] = pins[0] if pins else "1.0"
        return Resolution(found, {name: f"https://example.invalid/{name}" for name in found})


class FakeBuilder:
    """Writes bin/python (a link to this interpreter) and a script whose shebang names the build folder."""

    name = "fake"

    def __init__(self, delay: float = 0.0, fail: BaseException | None = None):
        self.delay, self.fail, self.builds = delay, fail, []

    def build(self, env: Path, resolution: Resolution) -> None:
        self.builds.append(env)
        (env / "bin").mkdir(parents=True)
        (env / "bin" / "python").symlink_to(sys.executable)
        (env / "bin" / "tool").write_text(f"#!{env}/bin/python\nprint('tool')\n")
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "0"\n'
        'dependencies = ["numpy>=1.24", "pytest>=8", "elsewhere>=1; sys_platform == \'no-such-platform\'"]\n')
    return root


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def prepare(spec, project, cache, resolver=None, builder=None, **kwargs):
    return envs.prepare(spec, project_root=project, cache_root=cache, log=lambda line: None,
                        resolver=resolver or FakeResolver(), builder=builder or FakeBuilder(), **kwargs)


# --------------------------------------------------------------------------- specs


def test_parse_spec_requirements_in_order_with_canonical_names():
    spec = envs.parse_spec("  torch==2.14.1   NumPy==2.3.5 ")
    assert spec.kind is SpecKind.REQUIREMENTS and spec.requirements == ("torch==2.14.1", "NumPy==2.3.5")
    assert spec.names == ("torch", "numpy") and spec.python is None


def test_parse_spec_current_and_an_interpreter_path():
    assert envs.parse_spec("current") == envs.Spec("current", SpecKind.CURRENT, python=Path(sys.executable))
    spec = envs.parse_spec(sys.executable)
    assert spec.kind is SpecKind.INTERPRETER and spec.python == Path(sys.executable)


def test_an_interpreter_path_is_made_absolute_but_not_resolved(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    assert envs.parse_spec("./bin/python").python == tmp_path / "bin" / "python"


def test_a_spec_package_the_platform_does_not_install_is_said_so(project, cache):
    class Without(FakeResolver):
        def resolve(self, requirements):
            resolution = super().resolve(requirements)
            return Resolution({k: v for k, v in resolution.distributions.items() if k != "winonly"}, resolution.sources)
    env = prepare("winonly;sys_platform=='win32'", project, cache, resolver=Without())
    assert env.description == f"winonly (not installed here) (numpy {NUMPY}, pytest {PYTEST}, built now)"


def executable(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("make, problem", [
    (lambda tmp: "", "empty"),
    (lambda tmp: "   ", "empty"),
    (lambda tmp: "numpy===", "'numpy===' is not a requirement specifier"),
    (lambda tmp: "numpy==2.2.6 NumPy==2.3.5", "names numpy twice"),
    (lambda tmp: str(tmp / "missing" / "python"), "no such file"),
    (lambda tmp: str(tmp), "not an executable file"),
    (lambda tmp: (tmp / "plain").write_text("x") and str(tmp / "plain"), "not an executable file"),
    (lambda tmp: executable(tmp / "fails", "#!/bin/sh\necho broken >&2\nexit 3\n"), "does not run as Python (broken)"),
    (lambda tmp: executable(tmp / "liar", "#!/bin/sh\necho hello\n"), "does not run as Python (hello)"),
    (lambda tmp: executable(tmp / "binary", "\x7fELF junk"), "does not run as Python"),
])
def test_a_bad_spec_is_one_line_naming_it_and_what_is_accepted(tmp_path, make, problem):
    text = make(tmp_path)
    with pytest.raises(UsageError) as info:
        envs.parse_spec(text)
    message = str(info.value)
    assert "\n" not in message and f"environment spec {text!r}: {problem}" in message
    assert "requirement specifiers" in message and "Python interpreter" in message and "'current'" in message


# --------------------------------------------------------------------------- requirements


def test_pins_keep_local_versions_and_the_spec_replaces_or_adds():
    dependencies = [Requirement("torch>=2.1"), Requirement("numpy>=1.24"), Requirement("Pillow[xmp]>=9")]
    installed = {"torch": "2.13.0+cpu", "numpy": "2.4.6", "pillow": "11.0"}
    spec = envs.parse_spec("NumPy==2.2.6 six==1.17.0")
    assert envs.pinned_requirements(dependencies, installed, spec) == [
        "torch==2.13.0+cpu", "NumPy==2.2.6", "Pillow[xmp]==11.0", "six==1.17.0"]


def test_project_dependencies_apply_markers_and_a_bad_pyproject_is_named(project, tmp_path):
    assert [str(r) for r in envs.project_dependencies(project)] == ["numpy>=1.24", "pytest>=8"]
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    with pytest.raises(UsageError, match=r"pyproject.toml: cannot read \[project\] dependencies"):
        envs.project_dependencies(tmp_path)


def test_the_current_environment_must_hold_every_dependency():
    assert envs.current_versions(["numpy", "PyTest"]) == {"numpy": NUMPY, "pytest": PYTEST}
    with pytest.raises(UsageError, match="lacks the project's dependencies no-such-dist-zz9: install the project"):
        envs.current_versions(["numpy", "no-such-dist-zz9"])


def test_the_resolver_gets_the_pins_of_this_environment_with_the_spec_applied(project, cache):
    resolver = FakeResolver()
    prepare("numpy==2.2.6 six==1.17.0", project, cache, resolver=resolver)
    assert resolver.calls == [["numpy==2.2.6", f"pytest=={PYTEST}", "six==1.17.0"]]


# --------------------------------------------------------------------------- pip's configuration and reports


def test_pip_config_of_this_machine():
    assert installers.parse_pip_config(MACHINE_LISTING) == PipConfig(
        index_url=None, extra_index_urls=("file:///opt/pypi/simple", "file:///opt/pypi-more/simple"),
        find_links=("/opt/wheels",), no_index=False, constraints=("/etc/xdg/pip/constraints.txt",),
        cert="/etc/ssl/certs/ca-certificates.crt")


def test_pip_config_precedence_is_variables_then_install_then_global():
    listing = ("global.index-url='https://global/simple'\ninstall.index-url='https://install/simple'\n"
               "global.find-links='/g'\n:env:.find-links='/e1 /e2'\ninstall.find-links='/i'\n"
               "global.no-index='true'\nglobal.extra-index-url=\"https://it's/simple\"\nfreeze.index-url='ignored'\n")
    config = installers.parse_pip_config(listing)
    assert config.index_url == "https://install/simple" and config.find_links == ("/e1", "/e2")
    assert config.no_index and config.extra_index_urls == ("https://it's/simple",)


def test_uv_is_told_where_pip_looks():
    config = installers.parse_pip_config(MACHINE_LISTING)
    builder = installers.UvBuilder("/bin/uv", config, python="/py/bin/python")
    create, install = builder.commands(Path("/cache/k.partial"), ["numpy==2.2.6", "torch==2.13.0+cpu"])
    assert create == ["/bin/uv", "venv", "--quiet", "--python", "/py/bin/python", "/cache/k.partial"]
    assert install == ["/bin/uv", "pip", "install", "--quiet", "--python", "/cache/k.partial/bin/python", "--no-deps",
                       "--compile-bytecode", "--index-strategy", "unsafe-best-match",
                       "--extra-index-url", "file:///opt/pypi/simple", "--extra-index-url", "file:///opt/pypi-more/simple",
                       "--find-links", "/opt/wheels", "numpy==2.2.6", "torch==2.13.0+cpu"]
    assert builder.environ()["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"


def test_uv_index_options_for_an_index_url_and_for_no_index():
    indexed = installers.UvBuilder("uv", PipConfig(index_url="https://mirror/simple", find_links=("/w",)))
    assert indexed.index_args() == ["--index-strategy", "unsafe-best-match", "--index-url", "https://mirror/simple",
                                    "--find-links", "/w"]
    offline = installers.UvBuilder("uv", PipConfig(index_url="https://mirror/simple", no_index=True, find_links=("/w",)))
    assert offline.index_args() == ["--index-strategy", "unsafe-best-match", "--no-index", "--find-links", "/w"]
    assert offline.environ() == dict(os.environ)


def test_pip_builds_without_pip_in_the_environment_and_reads_its_own_configuration():
    create, install = installers.PipBuilder("/py/bin/python").commands(Path("/c/k.partial"), ["six==1.17.0"])
    assert create == ["/py/bin/python", "-m", "venv", "--without-pip", "/c/k.partial"]
    assert install == ["/py/bin/python", "-m", "pip", "--python", "/c/k.partial/bin/python", "install", "--quiet",
                       "--no-input", "--no-deps", "six==1.17.0"]


def test_pip_resolver_runs_the_dry_run_and_reads_its_report():
    calls = []
    resolver = PipResolver(PipConfig(), python="/py", run=canned_run(stdout=pip_report({"NumPy": "2.2.6", "six": "1.17"}),
                                                                      calls=calls))
    resolution = resolver.resolve(["numpy==2.2.6", "six"])
    assert calls == [["/py", "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-input", "--quiet",
                      "--report", "-", "numpy==2.2.6", "six"]]
    assert resolution.distributions == {"numpy": "2.2.6", "six": "1.17"}
    assert resolution.pins() == ["numpy==2.2.6", "six==1.17"]
    assert resolution.sources["numpy"] == "file:///wheels/NumPy-2.2.6-py3-none-any.whl" and not resolution.downloads()


def test_a_report_that_lacks_a_field_is_one_line():
    run = canned_run(stdout=json.dumps({"install": [{"metadata": {"name": "six"}}]}))
    with pytest.raises(UsageError, match="pip's installation report lacks a field the resolution needs: 'version'"):
        PipResolver(PipConfig(), run=run).resolve(["six"])


@pytest.mark.parametrize("spec, stderr, reason", [
    ("nosuchpkg-zz9==1.0", UNKNOWN_PACKAGE, "No matching distribution found for nosuchpkg-zz9==1.0"),
    ("numpy==9.9", NO_SUCH_VERSION, "No matching distribution found for numpy==9.9"),
    ("scipy<1.0", CONFLICT, "Cannot install scipy<1.0 and scipy==1.17.1 because these package versions have conflicting"),
])
def test_a_spec_pip_cannot_resolve_is_one_line_naming_it_and_pips_reason(project, cache, spec, stderr, reason):
    resolver = PipResolver(PipConfig(), run=canned_run(returncode=1, stderr=stderr))
    builder = FakeBuilder()
    with pytest.raises(UsageError) as info:
        prepare(spec, project, cache, resolver=resolver, builder=builder)
    message = str(info.value)
    assert message.startswith(f"environment spec {spec!r}: {reason}") and "\n" not in message
    assert not builder.builds and not list(cache.glob("resolutions/*"))


@pytest.mark.parametrize("stderr, line", [("just this\n\n", "just this"), ("", "exit status 2"),
                                          ("error: uv says no\nhint: try\n", "uv says no")])
def test_telling_line_without_pip_errors(stderr, line):
    assert installers.telling_line(stderr, 2) == line


def test_differences_name_what_is_extra_missing_or_other():
    found = {"numpy": "2.2.7", "six": "1.17.0", "pip": "23.2"}
    assert installers.differences({"numpy": "2.2.6", "six": "1.17.0", "torch": "2.13.0"}, found) == [
        "numpy 2.2.7 instead of 2.2.6", "pip 23.2 not asked for", "torch 2.13.0 missing"]


def test_a_builder_that_cannot_install_is_one_line_naming_the_spec(project, cache):
    uv = installers.UvBuilder("uv", PipConfig(), run=canned_run(returncode=2, stderr="error: No solution found\n"))
    with pytest.raises(UsageError, match=r"^environment spec 'numpy==2.2.6': uv venv failed: No solution found$"):
        prepare("numpy==2.2.6", project, cache, builder=uv)
    assert not [p for p in cache.iterdir() if p.is_dir() and p.name != "resolutions"]


# --------------------------------------------------------------------------- the cache


def test_the_same_spec_again_builds_nothing_and_resolves_nothing(project, cache):
    resolver, builder = FakeResolver(), FakeBuilder()
    first = prepare("numpy==2.2.6", project, cache, resolver, builder)
    second = prepare("numpy==2.2.6", project, cache, resolver, builder)
    assert first.source is Source.BUILT and first.built_now and second.source is Source.CACHE
    assert first.python == second.python and first.python.parent.parent.parent == cache
    assert len(builder.builds) == 1 and len(resolver.calls) == 1
    assert first.versions == {"numpy": "2.2.6", "pytest": PYTEST}
    assert first.distributions == {"numpy": "2.2.6", "pytest": PYTEST, "dep-of-all": "0.1"}
    assert second.description == f"numpy 2.2.6 (pytest {PYTEST}, from cache)"


def test_refresh_resolves_again_and_builds_only_when_the_answer_changed(project, cache):
    resolver, builder = FakeResolver(), FakeBuilder()
    prepare("numpy==2.2.6", project, cache, resolver, builder)
    again = prepare("numpy==2.2.6", project, cache, resolver, builder, refresh=True)
    assert len(resolver.calls) == 2 and len(builder.builds) == 1 and again.source is Source.CACHE


def test_other_specs_get_other_folders_and_spec_order_does_not_matter(project, cache):
    builder = FakeBuilder()
    a = prepare("numpy==2.2.6 six==1.17.0", project, cache, builder=builder)
    b = prepare("six==1.17.0 numpy==2.2.6", project, cache, builder=builder)
    c = prepare("numpy==2.4.6", project, cache, builder=builder)
    assert a.python == b.python != c.python and len(builder.builds) == 2
    assert b.description == f"six 1.17.0, numpy 2.2.6 (pytest {PYTEST}, from cache)"


def test_environment_key_is_the_set_and_the_python():
    key = env_cache.environment_key({"numpy": "2.2.6", "six": "1.17.0"}, "cpython-3.11.7-linux-x86_64")
    assert key == env_cache.environment_key({"six": "1.17.0", "numpy": "2.2.6"}, "cpython-3.11.7-linux-x86_64")
    assert key != env_cache.environment_key({"numpy": "2.2.6", "six": "1.16.0"}, "cpython-3.11.7-linux-x86_64")
    assert key != env_cache.environment_key({"numpy": "2.2.6", "six": "1.17.0"}, "cpython-3.12.1-linux-x86_64")
    assert env_cache.python_tag().startswith(f"{sys.implementation.name}-{sys.version_info[0]}.")


def test_a_failed_build_leaves_no_environment_and_the_next_request_builds(project, cache):
    with pytest.raises(UsageError, match="^environment spec 'numpy==2.2.6': disk full$"):
        prepare("numpy==2.2.6", project, cache, builder=FakeBuilder(fail=UsageError("disk full")))
    with pytest.raises(KeyboardInterrupt):
        prepare("numpy==2.2.6", project, cache, builder=FakeBuilder(fail=KeyboardInterrupt()))
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == ["resolutions"]
    builder = FakeBuilder()
    assert prepare("numpy==2.2.6", project, cache, builder=builder).built_now and len(builder.builds) == 1


def test_a_killed_builds_partial_folder_is_never_used_and_is_removed(project, cache):
    resolution = FakeResolver().resolve(["numpy==2.2.6", f"pytest=={PYTEST}"])
    key = env_cache.environment_key(resolution.distributions)
    partial = cache / f"{key}.partial-999-dead"
    (partial / "bin").mkdir(parents=True)
    (partial / "bin" / "python").symlink_to(sys.executable)
    builder = FakeBuilder()
    env = prepare("numpy==2.2.6", project, cache, builder=builder)
    assert env.built_now and env.python == cache / key / "bin" / "python" and not partial.exists()


def test_a_folder_without_its_manifest_is_refused(project, cache):
    resolution = FakeResolver().resolve(["numpy==2.2.6", f"pytest=={PYTEST}"])
    entry = cache / env_cache.environment_key(resolution.distributions)
    entry.mkdir(parents=True)
    with pytest.raises(UsageError, match=f"{entry} in the environment cache is not a complete environment: remove it"):
        prepare("numpy==2.2.6", project, cache)


def test_scripts_name_the_published_folder_not_the_build_folder(project, cache):
    env = prepare("numpy==2.2.6", project, cache)
    assert (env.python.parent / "tool").read_text().startswith(f"#!{env.python}\n")
    assert json.loads((env.python.parent.parent / env_cache.MANIFEST).read_text())["builder"] == "fake"


def test_two_builders_at_once_build_once(project, cache):
    builder, results = FakeBuilder(delay=0.5), []
    threads = [threading.Thread(target=lambda: results.append(prepare("numpy==2.2.6", project, cache, builder=builder)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builder.builds) == 1 and len({r.python for r in results}) == 1
    assert sorted(r.source.value for r in results) == ["built now", "from cache"]


def test_an_unwritable_cache_is_one_line_naming_it_and_the_variable(project, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError) as info:
        prepare("numpy==2.2.6", project, tmp_path / "file" / "envs")
    message = str(info.value)
    assert f"the environment cache {tmp_path / 'file' / 'envs'} is not writable" in message
    assert "set XDG_CACHE_HOME" in message and "\n" not in message


def test_a_cache_folder_that_refuses_files_is_named(project, cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(env_cache.tempfile, "TemporaryFile", refuse)
    expected = f"^the environment cache {re.escape(str(cache))} is not writable \\(Permission denied\\): set XDG_CACHE_HOME"
    with pytest.raises(UsageError, match=expected):
        env_cache.usable_cache_root(cache)


def test_default_cache_root_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert env_cache.default_cache_root() == tmp_path / "relu-step-perf" / "envs"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert env_cache.default_cache_root() == Path.home() / ".cache" / "relu-step-perf" / "envs"


# --------------------------------------------------------------------------- existing interpreters


class Refuses:
    identity = name = "refuses"

    def resolve(self, requirements):
        raise AssertionError("an existing interpreter is not resolved")

    def build(self, env, resolution):
        raise AssertionError("an existing interpreter is not built")


def test_current_is_read_not_built(project, cache):
    env = prepare("current", project, cache, resolver=Refuses(), builder=Refuses())
    assert env.source is Source.EXISTING and env.python == Path(sys.executable)
    assert env.versions == {"numpy": NUMPY, "pytest": PYTEST} and env.distributions["numpy"] == NUMPY
    assert env.description == f"current environment (numpy {NUMPY}, pytest {PYTEST})"
    assert not cache.exists()


def test_an_interpreter_path_is_read_and_must_hold_the_dependencies(project, cache):
    env = prepare(sys.executable, project, cache, resolver=Refuses(), builder=Refuses())
    assert env.description == f"{sys.executable} (numpy {NUMPY}, pytest {PYTEST})"
    (project / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\ndependencies = ["no-such-dist-zz9"]\n')
    with pytest.raises(UsageError, match=f"{sys.executable} lacks the project's dependencies no-such-dist-zz9$"):
        prepare(sys.executable, project, cache, resolver=Refuses(), builder=Refuses())


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_real_one_package_environment_from_disk(tmp_path, cache):
    """six from the local mirror or pip's find-links: resolved by pip, built by uv (or venv + pip), cached."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\ndependencies = []\n')
    config = installers.read_pip_config()
    resolver = PipResolver(config)
    try:
        resolution = resolver.resolve(["six==1.17.0"])
    except UsageError as exc:
        pytest.skip(f"six 1.17.0 cannot be resolved here: {exc}")
    if not resolution.sources["six"].startswith("file:"):
        pytest.skip(f"six 1.17.0 is not on this machine's disk (pip would fetch {resolution.sources['six']})")
    lines = []
    first = envs.prepare("six==1.17.0", project_root=tmp_path, cache_root=cache, log=lines.append, resolver=resolver,
                         builder=installers.choose_builder(config))
    second = envs.prepare("six==1.17.0", project_root=tmp_path, cache_root=cache, log=lines.append, resolver=resolver)
    assert first.built_now and second.source is Source.CACHE and first.python == second.python
    assert installers.read_distributions(first.python) == {"six": "1.17.0"}
    ran = subprocess.run([str(first.python), "-c", "import six; print(six.__version__)"], capture_output=True, text=True)
    assert ran.stdout.strip() == "1.17.0" and second.description == "six 1.17.0 (from cache)"
    assert sum(line.startswith("built ") for line in lines) == 1
    assert "resolved 'six==1.17.0': 1 to install, 0 of them to download (not on this machine's disk)" in lines
