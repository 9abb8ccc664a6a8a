"""Scenario 12: paths from configs and tables stay under ``security.allowed_roots``."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.store.paths import PathNotAllowed, PathPolicy


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "allowed"
    (root / "data" / "cats").mkdir(parents=True)
    (root / "data" / "cats" / "a.png").write_bytes(b"x")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key.txt").write_text("s")
    os.symlink(tmp_path / "secret", root / "data" / "escape")  # a link inside the tree pointing out of it
    return tmp_path, root


def test_local_paths_traversal_and_symlinks(tree):
    tmp, root = tree
    policy = PathPolicy((str(root),))
    assert policy.check(str(root / "data" / "cats" / "a.png")) == str(root / "data" / "cats" / "a.png")
    assert policy.allows(str(root / "data" / "." / "cats"))
    for bad in (str(root / ".." / "secret" / "key.txt"), str(tmp / "secret" / "key.txt"), "/etc/passwd",
                str(root / "data" / "escape" / "key.txt"), f"file://{root}/%2e%2e/secret/key.txt",
                f"file://{root}/%252e%252e/secret", str(root) + "-sibling/x"):
        with pytest.raises(PathNotAllowed, match="outside security.allowed_roots|'..'"):
            policy.check(bad, "sources.0.path")
    assert PathPolicy().allows("/etc/passwd")  # no roots configured: unrestricted


def test_uris_bucket_prefix_and_encoded_traversal():
    policy = PathPolicy(("s3://team-bucket/aigc",))
    assert policy.allows("s3://team-bucket/aigc/runs?endpoint_override=x:9000&scheme=http")
    assert policy.allows("s3://KEY:SECRET@team-bucket/aigc/curated/v1")
    for bad in ("s3://other-bucket/aigc", "s3://team-bucket/aigc-other", "s3://team-bucket/aigc/../private",
                "s3://team-bucket/aigc/%2e%2e/private", "s3://team-bucket/aigc/%252e%252e%252fprivate",
                "gs://team-bucket/aigc", "/tmp/local"):
        assert not policy.allows(bad), bad


SEGMENTS = st.sampled_from(["..", ".", "data", "cats", "escape", "a.png", "%2e%2e", "%252e%252e", "", "~", "secret"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # tree is read-only
@given(parts=st.lists(SEGMENTS, min_size=1, max_size=8), as_uri=st.booleans())
def test_property_every_accepted_path_resolves_under_the_root(tree, parts, as_uri):
    tmp, root = tree
    policy = PathPolicy((str(root),))
    joined = "/".join(parts)
    path = f"file://{root}/{joined}" if as_uri else f"{root}/{joined}"
    from urllib.parse import unquote

    local = path[len("file://"):] if as_uri else path  # what the OS would open: a URI's path decoded until stable
    while as_uri and unquote(local) != local:
        local = unquote(local)
    real = os.path.realpath(local)
    inside = real == str(root.resolve()) or real.startswith(str(root.resolve()) + os.sep)
    assert policy.allows(path) == inside, (path, real)  # both ways: a policy refusing everything fails too


def test_config_paths_outside_the_roots_are_config_errors_naming_the_key(tree):
    from pipelines.config import ConfigError, load_config

    tmp, root = tree
    ok = [f"security.allowed_roots=[{root}]", f"output={root}/runs"]
    assert load_config(None, ok).security.allowed_roots == [str(root)]
    for extra, key in ((["output=s3://foreign-bucket/x"], "output"),
                       ([f"sources.0={{kind: text_files, path: '{root}/../secret/*.txt'}}"], "sources.0.path"),
                       ([f"sources.1={{kind: image_folder, path: '{root}/data/escape'}}"], "sources.1.path"),
                       (["generate.request_tables=[{path: /etc/briefs.csv}]"], "generate.request_tables.0.path")):
        with pytest.raises(ConfigError, match=rf"^{key}: .* is outside security.allowed_roots"):
            load_config(None, ok + extra)


def test_files_and_table_cells_outside_the_roots_are_quarantined_not_opened(tree, ray_local):
    import pandas as pd

    from jobs.data.curate import run_preprocess
    from jobs.data.spec import ImageFolderSource, PreprocessSpec, TableSource, TextFilesSource
    from jobs.store.storage import Store

    tmp, root = tree
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000010000000100800000000")  # a header only: undecodable
    (root / "data" / "cats" / "b.png").write_bytes(png)
    (tmp / "secret" / "x.png").write_bytes(png)
    (root / "texts").mkdir()
    (root / "texts" / "ok.txt").write_text("a perfectly fine line of text for the corpus\n")
    os.symlink(tmp / "secret" / "key.txt", root / "texts" / "leak.txt")
    pd.DataFrame({"image": [str(root / "data" / "cats" / "b.png"), str(tmp / "secret" / "x.png"),
                            f"{root}/data/../../secret/x.png", "/etc/hostname"],
                  "label": ["a", "b", "c", "d"]}).to_csv(root / "table.csv", index=False)
    store = Store(str(root / "runs"))
    sources = [ImageFolderSource(kind="image_folder", path=str(root / "data"), follow_symlinks_outside=True),
               TextFilesSource(kind="text_files", path=str(root / "texts" / "*.txt")),
               TableSource(kind="table", path=str(root / "table.csv"), image_column="image", label_column="label")]
    from jobs.store.paths import PathPolicy

    result = run_preprocess(sources, PreprocessSpec(resolution=16), store, policy=PathPolicy((str(root),)))
    c = result.counts
    assert c["inputs"] == c["accepted"] + c["rejected"]
    rejects = pd.read_parquet(store.path("rejects", "curated", result.dataset_version))
    outside = rejects[rejects["reason"] == "path_not_allowed"]
    # the folder's link to secret/, the text link to secret/key.txt, and three table cells outside the root
    assert len(outside) == 5 and c["by_reason"]["path_not_allowed"] == 5
    refs = set(outside["input_ref"])
    assert "escape" in refs and str(root / "texts" / "leak.txt") in refs  # refused by name, before any read
    inside = rejects[rejects["input_ref"].str.endswith("#0") | rejects["input_ref"].str.endswith("b.png")]
    assert set(inside["reason"]) == {"undecodable"}  # files inside the root are opened (and judged) as usual
