"""perf/pb.py against the pytest-benchmark installed: every internal the suite relies on is still
where the adapter reaches for it. An upgrade that moves one fails here, by name, not deep inside a run."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pytest_benchmark.fixture import BenchmarkFixture
from pytest_benchmark.session import BenchmarkSession
from pytest_benchmark.storage.file import FileStorage
from pytest_benchmark.utils import NameWrapper

from perf import pb, results


def fixture(name: str = "test_x[a]") -> BenchmarkFixture:
    added = []
    f = BenchmarkFixture(SimpleNamespace(name=name, nodeid=f"perf/t.py::{name}"), disable_gc=True,
                         timer=NameWrapper(lambda: 0.0), min_rounds=7, min_time=1e-4, max_time=0.25, precision=None,
                         confidence=None, warmup=False, warmup_iterations=0, calibration_precision=10,
                         add_stats=added.append, logger=SimpleNamespace(warning=lambda *a, **k: None), warner=None,
                         disabled=False, cprofile=False, cprofile_loops=None, cprofile_dump=None)
    f.added = added
    return f


def test_the_fixture_still_has_every_attribute_the_adapter_uses():
    f = fixture()
    missing = [a for a in pb.FIXTURE_ATTRIBUTES if not hasattr(f, a)]
    assert not missing, f"pytest-benchmark's BenchmarkFixture no longer has {missing}: update perf/pb.py"


def test_the_suite_records_its_own_samples_as_pytest_benchmark_stats():
    f = fixture()
    assert pb.limits(f) == (1e-4, 0.25, 7)

    def device_sync_perf_counter() -> float:
        return 0.0

    pb.record(f, [3e-6, 1e-6, 2e-6], device_sync_perf_counter, iterations=4, group="seed relu")
    assert f.added == [f.stats] and f.group == "seed relu"
    assert list(f.stats.stats.data) == [3e-6, 1e-6, 2e-6] and f.stats.stats.median == 2e-6
    assert pb.timer_name(f) == "device_sync_perf_counter"
    as_json = f.stats.as_dict(include_data=True)
    assert as_json["stats"]["data"] == [3e-6, 1e-6, 2e-6] and as_json["stats"]["iterations"] == 4
    assert as_json["fullname"] == "perf/t.py::test_x[a]"


def test_the_session_still_sets_every_attribute_the_adapter_uses():
    source = inspect.getsource(BenchmarkSession.__init__)
    missing = [a for a in pb.SESSION_ATTRIBUTES if f"self.{a} =" not in source]
    missing += [m for m in pb.SESSION_METHODS if not callable(getattr(BenchmarkSession, m, None))]
    assert not missing, f"pytest-benchmark's BenchmarkSession no longer sets {missing}: update perf/pb.py"


def test_the_tables_can_be_hidden_and_lose_a_column():
    bs = SimpleNamespace(display=lambda tr: tr.append("table"), columns=["min", "max", "ops", "rounds"])
    pb.drop_column(bs, "ops")
    assert bs.columns == ["min", "max", "rounds"]
    shown: list[str] = []
    bs.display(shown)
    pb.hide_tables(bs)
    bs.display(shown)
    assert shown == ["table"]


def test_saving_goes_through_the_suite_and_cancelling_it_works():
    bs = SimpleNamespace(storage=FileStorage("/nonexistent-never-made", logger=None, default_machine_id="m"), save="x",
                         autosave=None)
    saved = []
    assert pb.wants_save(bs) and pb.replace_save(bs, lambda doc, name: saved.append(name))
    bs.storage.save({}, "run")
    assert saved == ["run"] and pb.storage_folder(bs) == Path("/nonexistent-never-made/m")
    pb.cancel_save(bs)
    assert not pb.wants_save(bs)


def test_the_file_storage_is_opened_listed_and_queried_as_compare_names_runs(tmp_path):
    options = {"benchmark_storage": f"file://{tmp_path}", "benchmark_netrc": None, "benchmark_compare": [],
               "benchmark_max_time": "0.5", "benchmark_min_time": "0.0001", "benchmark_min_rounds": 10}
    config = SimpleNamespace(option=SimpleNamespace(**options), pluginmanager=SimpleNamespace(getplugin=lambda name: None))
    config.getoption = lambda key, default=None: getattr(config.option, key, default)
    storage = pb.open_storage(config)
    missing = [a for a in pb.FILE_STORAGE_ATTRIBUTES if not hasattr(storage, a)]
    assert not missing and pb.is_file_storage(storage), missing
    folder = pb.folder_of(storage)
    assert folder == tmp_path / pb.machine_id()
    folder.mkdir(parents=True)
    for name in ("0001_a", "0002_b"):
        results.save_new(folder, name[5:], json.dumps({"benchmarks": []}).encode())
    assert [p.name for p in pb.saved_files(storage)] == ["0001_a.json", "0002_b.json"]
    assert [p.name for p in pb.query(storage, "0002")] == ["0002_b.json"]
    assert pb.query(storage, "0007") == []
    with pytest.raises(ValueError):
        pb.query(storage, "a/b/c/d")
    assert pb.compare_option(config) is None  # pytest-benchmark's default for an absent option is []
    pb.set_compare(config, str(folder / "0002_b.json"))
    assert pb.compare_option(config) == str(folder / "0002_b.json")
    pb.set_compare(config, None)
    assert config.option.benchmark_compare == [] and pb.config_limits(config) == (0.5, 0.0001, 10)


def test_runs_are_written_as_pytest_benchmark_writes_them():
    assert json.loads(pb.dumps({"benchmarks": [], "x": 1.5})) == {"benchmarks": [], "x": 1.5}
