"""ROOT on object storage: ``Store``, ``publish``, Ray workers and a whole night against a real S3-compatible
server (moto's server mode, started by ``tests/conftest.py`` on localhost). Nothing here mocks the S3 client:
every byte goes over HTTP to the server.

Run: ``python -m pytest tests/jobs/store/test_object_store.py``
"""

import hashlib
import json

import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from jobs.store.commit import commit, staging_dir
from jobs.store.storage import Store
from tests.conftest import RUN_DATE, TINY_CONFIG


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path):
    """The same contract checked on a local folder and on the S3 server."""
    if request.param == "local":
        return Store(str(tmp_path / "root"))
    return Store(request.getfixturevalue("s3_root"))


def test_store_round_trip_on_s3(s3_root, s3_server):
    store = Store(s3_root)
    assert isinstance(store.fs, pafs.S3FileSystem) and not store.is_local
    assert store.path("a", "b.txt") == f"{s3_server.bucket}/{s3_root.split('/', 3)[3].split('?')[0]}/a/b.txt"
    assert not store.exists("a") and store.listdir("a") == [] and store.files("a") == []

    store.write_bytes(b"hello", "a", "b.txt")
    store.write_json({"x": 1}, "a", "c", "d.json")
    assert store.read_bytes("a", "b.txt") == b"hello" and store.read_json("a", "c", "d.json") == {"x": 1}
    assert store.exists("a") and store.exists("a", "c") and store.exists("a", "b.txt")  # prefixes are folders
    assert store.listdir("a") == ["b.txt", "c"]
    assert store.files("a") == [store.path("a", "b.txt"), store.path("a", "c", "d.json")]
    assert store.files("a", suffix=".json") == [store.path("a", "c", "d.json")]
    assert not [p for p in store.files() if ".tmp-" in p]  # uploads land whole: no temporary copies

    store.makedirs("empty", "dir")  # a marker object: an empty folder exists until deleted
    assert store.exists("empty", "dir") and store.listdir("empty", "dir") == []

    store.write_bytes(b"replaced", "a", "b.txt")
    assert store.read_bytes("a", "b.txt") == b"replaced"
    store.delete("a", "b.txt")
    assert not store.exists("a", "b.txt") and store.exists("a", "c", "d.json")
    store.delete("a")
    store.delete("empty")
    store.delete("not", "there")  # nothing there is not an error
    assert not store.exists("a") and not store.exists("empty") and store.files() == []


def test_display_is_a_usable_uri_without_the_secret(s3_root, s3_server, monkeypatch):
    store = Store(s3_root)
    store.write_bytes(b"x", "models", "m", "f.bin")
    shown = store.display("models", "m")
    assert shown == f"s3://{store.path('models', 'm')}?endpoint_override={s3_server.endpoint}&scheme=http&region=us-east-1"
    assert s3_server.secret_key + "@" not in shown
    # what a person pastes, with the keys in their environment, reaches the same objects
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    assert Store(shown).read_bytes("f.bin") == b"x"


def test_credentials_and_endpoint_from_the_aws_variables(s3_server, monkeypatch):
    """What deploy/README.md documents for clusters: a plain s3:// ROOT, everything else from the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_server.endpoint}")
    store = Store(f"s3://{s3_server.bucket}/env-root")
    store.write_json({"ok": True}, "x.json")
    assert store.read_json("x.json") == {"ok": True} and store.display("x.json") == f"s3://{s3_server.bucket}/env-root/x.json"
    store.delete("x.json")


def _stage(store, area, name, files):
    staging = staging_dir(store, area, name)
    for rel, data in files.items():
        store.write_bytes(data, staging, rel)
    return staging


def test_publish_replaces_the_target_whole(any_store):
    store = any_store
    first = _stage(store, "generated", "date=2026-01-01", {"a.parquet": b"old-a", "b.parquet": b"old-b"})
    assert commit(store, first, "generated", "date=2026-01-01") == "generated/date=2026-01-01"
    second = _stage(store, "generated", "date=2026-01-01",
                    {"c.parquet": b"new-c", "sub/d.parquet": b"new-d", "_meta.json": b"{}"})
    store.makedirs(second, "rejects")  # an empty folder travels too (a split with no rows)
    commit(store, second, "generated", "date=2026-01-01")

    target = store.path("generated", "date=2026-01-01")
    assert [p[len(target) + 1:] for p in store.files("generated", "date=2026-01-01")] == \
        ["_meta.json", "c.parquet", "sub/d.parquet"]  # the new version only: nothing of the old one is left
    assert store.read_bytes("generated", "date=2026-01-01", "sub", "d.parquet") == b"new-d"
    assert store.exists("generated", "date=2026-01-01", "rejects")
    assert store.files("staging", "generated") == []  # staging and the replaced version are gone
    assert store.listdir("generated") == ["date=2026-01-01"]  # staging lives outside the dataset root


def test_folder_move_on_s3_copies_metadata_last_and_deletes_it_first(s3_root):
    """A folder is trusted by its *.json (manifest, model card): on an object store it must appear after the
    data it describes, and disappear from the source before that data does. The calls are watched on their
    way to the real server."""
    store = Store(s3_root)
    calls = []

    class Watched:
        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            method = getattr(self.fs, name)
            return lambda *args, **kw: (calls.append((name, args)), method(*args, **kw))[1]

    for rel in ("z.parquet", "_manifest.json", "train/a.parquet", "model_card.json"):
        store.write_bytes(rel.encode(), "src", rel)
    store.fs = Watched(store.fs)
    store.move("src", "dst")
    store.fs = store.fs.fs

    copied = [a[1].rsplit("/", 1)[-1] for n, a in calls if n == "copy_file"]
    assert sorted(copied[:2]) == ["a.parquet", "z.parquet"] and sorted(copied[2:]) == ["_manifest.json", "model_card.json"]
    deletes = [(n, a[0]) for n, a in calls if n in ("delete_file", "delete_dir")]
    assert all(p.endswith(".json") for _, p in deletes[:2]) and deletes[2] == ("delete_dir", store.path("src"))
    assert not store.exists("src")
    assert sorted(p.rsplit("/", 1)[-1] for p in store.files("dst")) == ["_manifest.json", "a.parquet", "model_card.json", "z.parquet"]


def test_ray_workers_rebuild_the_store_from_its_root(s3_root, ray_local):
    """Ray tasks get ``store.root`` or a pickled ``Store`` and reach the same bucket with the same endpoint."""
    ray = ray_local
    store = Store(s3_root)
    store.write_bytes(b"from the driver", "in.txt")

    @ray.remote(num_cpus=0)
    def copy(given: Store, root: str) -> str:
        data = given.read_bytes("in.txt")
        Store(root).write_bytes(data + b", via a worker", "out.txt")
        return given.display("out.txt")

    shown = ray.get(copy.remote(store, store.root))
    assert store.read_bytes("out.txt") == b"from the driver, via a worker" and shown == store.display("out.txt")


def test_nightly_flow_with_root_on_s3(s3_root, ray_local, prefect_server, capsys, tmp_path):
    """The real nightly flow (sources -> curated -> Ray Train -> registry -> generation) with ROOT on the S3
    server, read back from there with pyarrow; then the night re-run smaller replaces its partition."""
    import aigc_models
    from jobs.data.curated import verify_curated
    from jobs.generate.run import run_generation
    from jobs.store import registry
    from pipelines.config import as_dict, load_config, validate
    from pipelines.flows import nightly_flow

    # the tiny night's image half (each model costs a Ray Train start-up; the text one adds nothing S3-specific)
    data = as_dict(load_config(TINY_CONFIG, output=s3_root, overrides=["train.keep_finished_checkpoints=true",
                                                                       "models.0.epochs=1"]))
    data["sources"], data["models"] = data["sources"][:1], data["models"][:1]
    data["generate"]["requests"] = data["generate"]["requests"][:1]
    cfg = validate(data)
    result = nightly_flow(as_dict(cfg), RUN_DATE)
    store = Store(s3_root)
    assert "testing:testing@" not in json.dumps(result.to_dict(), default=str) + repr(result)  # paths are shown without the keys

    version = result.preprocess.dataset_version
    assert store.read_json("manifests/curated/latest.json") == {"dataset_version": version}
    assert result.preprocess.path == store.display("curated", version)
    assert verify_curated(store, version)["train"] > 0  # the files on S3 hold what the manifest says

    for m in result.models:
        name = m.name
        ref = registry.resolve(store, name)  # through production.json
        assert ref.version == m.candidate and store.exists(ref.path, "metrics.parquet")
        model = registry.load(store, ref)  # weights fetched from S3
        assert isinstance(model, aigc_models.GenerativeModel) and model.num_parameters() == ref.card.parameters
        weights = store.read_bytes(ref.path, "model.safetensors")  # the very file the card's checksum names
        assert hashlib.sha256(weights).hexdigest() == ref.card.checkpoint_sha256
        run = ref.card.ray_train_run  # Ray Train wrote its checkpoints to the bucket
        assert not store.exists("checkpoints", name, "_active.json")
        checkpoints = [p for p in store.files("checkpoints", name, run) if p.endswith("/model.safetensors")]
        assert checkpoints and all("/checkpoint_" in p for p in checkpoints)

    partition = store.path("generated", f"date={RUN_DATE}")
    table = pads.dataset(partition, filesystem=store.fs, format="parquet").to_table()
    assert table.num_rows == 12 == result.generate.rows
    assert sorted(table.column("label").to_pylist()) == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    manifest = store.read_json("manifests", "generated", f"{RUN_DATE}.json")
    assert sum(pq.read_metadata(f"{partition}/{f['path']}", filesystem=store.fs).num_rows for f in manifest["files"]) == 12
    assert set(table.column("id").to_pylist()) == {
        i for f in manifest["files"] for i in pq.read_table(f"{partition}/{f['path']}", filesystem=store.fs).column("id").to_pylist()}

    again = run_generation(cfg.generate, store, RUN_DATE, cfg.name, count=5)  # another night's work, same date
    assert again.rows == 5 and pads.dataset(partition, filesystem=store.fs, format="parquet").count_rows() == 5
    assert store.read_json("manifests", "generated", f"{RUN_DATE}.json")["rows"] == 5
    assert store.files("staging", "generated") == [] and store.files("staging", "curated") == []

    # the night's report and its lease live on the bucket too: the report written, the lease released
    report = json.loads(store.read_bytes("reports", f"run_date={RUN_DATE}", "report.json"))
    assert report["status"] == "published" and store.exists("reports", f"run_date={RUN_DATE}", "index.html")
    assert not store.exists("_locks", "nightly.json") and store.listdir("_locks") == []
    _commands_against_the_bucket(store, s3_root, version, capsys, tmp_path)


def _commands_against_the_bucket(store, s3_root, version, capsys, tmp_path):
    """``aigc inspect``, ``regenerate`` and ``augment`` pointed at URIs on the bucket, as a user types them."""
    from pipelines.cli import main

    capsys.readouterr()
    ref_path = next(p for p in store.listdir("models", "tiny-gan") if p[:1].isdigit())
    for uri, needle in [(store.child("generated", f"date={RUN_DATE}").root, "5 rows"),
                        (store.child("curated", version).root, f"curated dataset {version}"),
                        (store.child("models", "tiny-gan", ref_path).root, "model tiny-gan")]:
        assert main(["inspect", uri, "--grid", str(tmp_path / "grid.png")]) == 0, uri
        assert needle in capsys.readouterr().out
    assert main(["inspect", store.child("no-such-folder").root]) == 2
    assert "does not exist" in capsys.readouterr().err and "testing:testing@" not in capsys.readouterr().err

    ids = pads.dataset(store.path("generated"), filesystem=store.fs, format="parquet").to_table(columns=["id"])
    args = ["--config", str(TINY_CONFIG), "--out", s3_root, "--set", "ray.dashboard=false"]
    assert main(["regenerate", *args, "--id", ids.column("id")[0].as_py(), "--to", str(tmp_path / "re")]) == 0
    assert "1/1 rows regenerated identically" in capsys.readouterr().out

    assert main(["augment", *args, "--set", "augment.modality=image"]) == 0
    (mix,) = store.listdir("augmented")
    manifest = store.read_json("manifests", "augmented", f"{mix}.json")
    assert manifest["counts"]["synthetic"] == 5 and manifest["counts"]["rows"] == len(
        pads.dataset(store.path("augmented", mix), filesystem=store.fs, format="parquet").to_table(columns=["id"]))
