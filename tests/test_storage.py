"""The artifact store's contract, run against both implementations: the file system, and S3 over real HTTP
against a real S3-compatible server (SeaweedFS, see tests/s3_server.py) with a real boto3 client."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import uuid
from pathlib import Path

import pytest
from s3_server import S3Server

from erasepro_jobs.settings import Settings
from erasepro_jobs.storage import (
    FileStorage,
    InvalidKey,
    InvalidRange,
    ObjectNotFound,
    Storage,
    StorageError,
    open_storage,
)
from erasepro_jobs.storage.s3 import S3Storage

PART = 5 << 20  # S3's smallest multipart part: files above it go up in parts in these tests


@pytest.fixture(params=["fs", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "fs":
        return FileStorage(tmp_path / "root")
    server: S3Server = request.getfixturevalue("s3_server")
    # a fresh prefix per test: every test sees an empty store
    return S3Storage(server.bucket, f"t-{uuid.uuid4().hex[:8]}", tmp_path / "scratch", client=server.client(),
                     multipart_threshold=PART)


def _read(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(storage.read(key, start, end))


def test_put_stat_and_sha256(storage: Storage, tmp_path: Path) -> None:
    info = storage.put_bytes("a/b/one.bin", b"0123456789")
    assert (info.size, info.sha256) == (10, hashlib.sha256(b"0123456789").hexdigest())
    stat = storage.stat("a/b/one.bin")
    assert (stat.key, stat.size, stat.sha256) == ("a/b/one.bin", 10, info.sha256)
    big = os.urandom(PART * 2 + 12345)  # multipart on S3
    src = tmp_path / "big.bin"
    src.write_bytes(big)
    put = storage.put_file("a/big.bin", src)
    assert src.exists()  # without move the source stays
    assert storage.stat("a/big.bin").sha256 == put.sha256 == hashlib.sha256(big).hexdigest()
    assert storage.stat("a/big.bin").size == len(big)
    assert _read(storage, "a/big.bin") == big
    moved = storage.put_file("a/moved.bin", src, move=True)
    assert not src.exists() and moved.sha256 == hashlib.sha256(big).hexdigest()
    before = storage.stat("a/b/one.bin").version
    storage.put_bytes("a/b/one.bin", b"changed")
    after = storage.stat("a/b/one.bin")
    assert after.version != before and after.sha256 == hashlib.sha256(b"changed").hexdigest()
    dest = tmp_path / "down" / "copy.bin"
    assert storage.download("a/big.bin", dest) == hashlib.sha256(big).hexdigest() and dest.read_bytes() == big


def test_range_reads(storage: Storage) -> None:
    storage.put_bytes("r/x", b"0123456789")
    assert _read(storage, "r/x", 2, 5) == b"234"
    assert _read(storage, "r/x", 7) == b"789"  # open-ended
    assert _read(storage, "r/x", -3) == b"789"  # suffix
    assert _read(storage, "r/x", -30) == b"0123456789"  # a suffix longer than the object: all of it
    assert _read(storage, "r/x", 8, 100) == b"89"  # clipped at the end
    assert _read(storage, "r/x", 4, 4) == b""
    with pytest.raises(InvalidRange):
        _read(storage, "r/x", 10)
    blob = os.urandom(3 * (1 << 20) + 7)  # crosses the 1 MiB chunk boundaries
    storage.put_bytes("r/blob", blob)
    chunks = list(storage.read("r/blob", 1000, len(blob) - 5))
    assert max(len(c) for c in chunks) <= 1 << 20  # streamed, bounded memory
    assert b"".join(chunks) == blob[1000:-5]


def test_readers_never_see_a_partial_object(storage: Storage) -> None:
    a, b = b"A" * (1 << 20), b"B" * ((1 << 20) + 4096)
    storage.put_bytes("atomic/obj", a)
    stop = threading.Event()
    bad: list[tuple[bytes, int]] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            data = _read(storage, "atomic/obj")
            reads[0] += 1
            if data not in (a, b):
                bad.append((data[:1], len(data)))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: a reader that took the size of one version and the
    try:  # bytes of the next (a race the file system implementation had) shows up within a few hundred puts
        for t in threads:
            t.start()
        for i in range(200 if isinstance(storage, FileStorage) else 20):
            storage.put_bytes("atomic/obj", b if i % 2 == 0 else a)
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(interval)
    assert not bad, bad[:5]
    assert reads[0] > 3
    assert [o.key for o in storage.list("atomic")] == ["atomic/obj"]  # no temporaries listed


def test_list_and_delete(storage: Storage) -> None:
    for key in ("t/acme/e/1/m.json", "t/acme/e/1/d.bin", "t/acme/e/2/m.json", "t/acme/e2/x", "u/y"):
        storage.put_bytes(key, key.encode())
    assert [o.key for o in storage.list("t/acme/e")] == ["t/acme/e/1/d.bin", "t/acme/e/1/m.json", "t/acme/e/2/m.json"]
    assert [o.key for o in storage.list("t/acme/e/")] == [o.key for o in storage.list("t/acme/e")]
    assert {o.size for o in storage.list("u")} == {3}
    assert storage.delete("t/acme/e/2/m.json") is True
    assert storage.delete("t/acme/e/2/m.json") is False
    assert storage.delete_prefix("t/acme/e/1") == 2
    assert storage.list("t/acme/e") == [] and not storage.exists("t/acme/e/1/m.json")
    assert [o.key for o in storage.list("t")] == ["t/acme/e2/x"]  # a sibling with a longer name is untouched
    assert storage.delete_prefix("nothing/here") == 0
    with pytest.raises(ValueError):
        storage.delete_prefix("")


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../x", "a//b", "a/./b", ".hidden", "a/.tmp-1",
                                 "a/..", "", "a/", "a\\b", "a\x00b"])
def test_path_traversal_is_rejected(storage: Storage, key: str, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    for call in (lambda: storage.put_bytes(key, b"x"), lambda: storage.put_file(key, src),
                 lambda: storage.stat(key), lambda: storage.read(key), lambda: storage.delete(key)):
        with pytest.raises(InvalidKey):
            call()
    if key not in ("", "a/"):  # as prefixes, these two mean "everything" and "a"
        with pytest.raises(InvalidKey):
            storage.list(key)
    assert storage.list() == []  # nothing was written anywhere


def test_missing_keys(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound):
        storage.stat("no/such/key")
    with pytest.raises(ObjectNotFound):
        storage.read("no/such/key")
    with pytest.raises(ObjectNotFound):
        storage.get_bytes("no/such/key")
    assert storage.delete("no/such/key") is False and not storage.exists("no/such/key")
    assert storage.list("no/such") == []


def test_scratch_is_private_and_removed(storage: Storage) -> None:
    with storage.scratch("tenants/acme/erasures/abc", "job1") as tmp:
        assert tmp.is_dir() and tmp.name.startswith(".tmp-job1-")
        (tmp / "f").write_bytes(b"built here")
        storage.put_file("tenants/acme/erasures/abc/f", tmp / "f", move=True)
    assert not tmp.exists()
    assert storage.get_bytes("tenants/acme/erasures/abc/f") == b"built here"
    assert [o.key for o in storage.list("tenants")] == ["tenants/acme/erasures/abc/f"]


# --------------------------------------------------------------------------------------- S3 specifics
def test_s3_checks_credentials_and_reports_an_unreachable_store(s3_server: S3Server, tmp_path: Path) -> None:
    wrong = S3Storage(s3_server.bucket, "p", tmp_path, client=s3_server.client(secret="not-the-secret"))
    with pytest.raises(StorageError, match="SignatureDoesNotMatch|AccessDenied|Forbidden"):
        wrong.put_bytes("k", b"x")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")  # boto3 needs some credentials to try at all
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    from app.embedded import free_port

    down = S3Storage("bucket", "p", tmp_path, endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match="127.0.0.1"):
        down.stat("k")


def test_s3_objects_carry_their_sha256(s3_server: S3Server, tmp_path: Path) -> None:
    storage = S3Storage(s3_server.bucket, "meta", tmp_path, client=s3_server.client())
    storage.put_bytes("x/y", b"hello")
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key="meta/x/y")
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert "meta/x/y" in s3_server.keys("meta/")
    # an object written by someone else (no metadata) still stats with its sha256, computed by streaming
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="meta/foreign", Body=b"abc")
    assert storage.stat("foreign").sha256 == hashlib.sha256(b"abc").hexdigest()


# ------------------------------------------------------------------------------------------- settings
def test_open_storage_follows_the_url(tmp_path: Path) -> None:
    fs = open_storage(Settings(data_dir=tmp_path))
    assert isinstance(fs, FileStorage) and fs.root == tmp_path
    other = open_storage(Settings(data_dir=tmp_path, storage_url=f"file://{tmp_path / 'elsewhere'}"))
    assert isinstance(other, FileStorage) and other.root == tmp_path / "elsewhere"
    s3 = open_storage(Settings(data_dir=tmp_path, storage_url="s3://my-bucket/erasepro/prod",
                               s3_endpoint_url="http://127.0.0.1:9"))
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("my-bucket", "erasepro/prod")
    assert s3.client.meta.endpoint_url == "http://127.0.0.1:9"
    for bad in ("s3://", "s3://UPPER/x", "s3://b/../etc", "file://relative", "ftp://host/x", "/just/a/path"):
        with pytest.raises(ValueError, match="storage_url|ERASEPRO_STORAGE_URL|bucket|prefix|file"):
            Settings(data_dir=tmp_path, storage_url=bad)
    with pytest.raises(ValueError, match="endpoint"):
        Settings(data_dir=tmp_path, s3_endpoint_url="127.0.0.1:9000")


# ------------------------------------------------------------------------------- crash leftovers (worker)
@pytest.fixture(scope="module")
def redis_client(embedded_redis):
    import redis

    client = redis.Redis.from_url(embedded_redis.url, decode_responses=True)
    yield client
    client.close()


def test_worker_start_sweeps_what_crashed_jobs_left(storage: Storage, redis_client) -> None:
    """A crash between the delta's put and the manifest's leaves a manifest-less checkpoint; a crash while
    building leaves a scratch folder. The next worker removes both for jobs without a lease, nothing else."""
    from types import SimpleNamespace

    from erasepro_jobs import store
    from worker.runner import cleanup_stale

    orphan, live, done = (store.new_job_id() for _ in range(3))
    for jid in (orphan, live, done):
        storage.put_bytes(store.checkpoint_key("acme", jid, store.DELTA_FILE), b"delta")
    store.write_manifest(storage, "acme", done, {"id": done, "tenant": "acme", "files": {}})
    redis_client.set(store.k_lease(live), "worker-x", ex=60)  # still being written by a live worker
    with storage.scratch(store.checkpoint_prefix("acme", orphan), orphan) as left:
        kept = left.with_name(left.name + "-kept")
        left.rename(kept)  # as if the process had died inside the block
    assert kept.is_dir()
    removed = cleanup_stale(SimpleNamespace(storage=storage, r=redis_client))
    assert removed == 2 and not kept.exists()
    assert not storage.list(store.checkpoint_prefix("acme", orphan))
    assert storage.exists(store.checkpoint_key("acme", live, store.DELTA_FILE))
    assert store.read_manifest(storage, "acme", done)["id"] == done
