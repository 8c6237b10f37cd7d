"""``GET /v1/erasures`` at scale on the running service: each request examines at most ``LIST_SCAN_BUDGET`` index
entries, the cursor walks to the end, every job is listed exactly once with and without filters, and the index
is rebuilt from the artifact store once Redis has lost it.

The jobs are made directly (records through the lifecycle, checkpoints through the store), not by running
1,300 erasures; the API serving them is the real one (uvicorn + Redis of the shared stack), under its own
tenant ``bulk`` so no other test's listing sees them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import Stack  # noqa: E402

from erasepro_jobs import store  # noqa: E402
from erasepro_jobs.lifecycle import JobRef, Lifecycle  # noqa: E402
from erasepro_jobs.listing import LIST_SCAN_BUDGET, decode_cursor  # noqa: E402
from erasepro_jobs.storage import FileStorage  # noqa: E402

pytest_plugins = ["service_fixtures"]  # the running service (shared by every test_service_* module)

TENANT = "bulk"
N = 2 * LIST_SCAN_BUDGET + 300  # three budgets' worth: two full, one partial


class Jobs:
    """The tenant's jobs, newest first, and which are records (queued) and which checkpoints only."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.records: set[str] = set()
        self.checkpoints: set[str] = set()
        self.red: set[str] = set()


@pytest.fixture(scope="module")
def jobs(svc: Stack) -> Iterator[Jobs]:
    lc = Lifecycle(svc.r, svc.data_dir)
    storage = FileStorage(svc.data_dir)
    out = Jobs()
    for i in range(N):  # i-th oldest; every third is a checkpoint with no record (as after a flush)
        jid = store.new_job_id()
        created = time.time()  # the record's index score is the creation time (the script's clock): in order
        if i % 3 == 0:
            store.write_manifest(storage, TENANT, jid, {"id": jid, "tenant": TENANT, "created_at": created,
                                                        "files": {}, "metadata": {"team": "red"} if i % 2 else {}})
            out.checkpoints.add(jid)
        else:
            meta = {"team": "red"} if i % 2 else {}
            lc.create(JobRef(jid, "erasure", TENANT), fields={"base_model": "tiny", "metadata": meta},
                      created=created, idem_key=None, body_hash="", idem_ttl_s=60, limit=0, data={})
            out.records.add(jid)
        if i % 2:
            out.red.add(jid)
        out.order.append(jid)
    out.order.reverse()
    yield out
    for jid in out.checkpoints:
        store.delete_checkpoint(storage, TENANT, jid)
    svc.r.delete(store.k_index(TENANT), store.k_indexed(TENANT), *(store.k_job(j) for j in out.records))


@pytest.fixture(scope="module")
def bulk(svc: Stack) -> Iterator[httpx.Client]:
    with svc.client(TENANT) as c:
        yield c


def walk(client: httpx.Client, params: dict[str, str]) -> list[dict]:
    """Every page from the first to ``next_cursor: null``; each page as returned."""
    pages, cursor = [], None
    for _ in range(N + 5):  # bounded: a cursor that never ends fails the test
        r = client.get("/v1/erasures", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        pages.append(r.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("the cursor never reached the end")


def ids(pages: list[dict]) -> list[str]:
    return [j["id"] for p in pages for j in p["items"]]


def test_a_filter_matching_none_examines_one_budget_per_request(bulk: httpx.Client, jobs: Jobs) -> None:
    pages = walk(bulk, {"limit": "20", "metadata[team]": "nobody"})
    assert [len(p["items"]) for p in pages] == [0, 0, 0]  # empty pages, yet a cursor until the end
    # each cursor stands exactly one budget further down the index: no request examined more
    stops = [jobs.order.index(decode_cursor(p["next_cursor"])[1]) for p in pages[:-1]]
    assert stops == [LIST_SCAN_BUDGET - 1, 2 * LIST_SCAN_BUDGET - 1]


@pytest.mark.parametrize("params", [{"limit": "100"}, {"limit": "7"}])
def test_pagination_lists_every_job_once(bulk: httpx.Client, jobs: Jobs, params: dict[str, str]) -> None:
    pages = walk(bulk, params)
    assert ids(pages) == jobs.order
    assert all(len(p["items"]) == int(params["limit"]) for p in pages[:-1])  # unfiltered pages are full
    assert pages[-1]["items"]  # the end has no cursor to an empty page


def test_filtered_pagination_lists_every_match_once(bulk: httpx.Client, jobs: Jobs) -> None:
    red = ids(walk(bulk, {"limit": "50", "metadata[team]": "red"}))
    assert red == [j for j in jobs.order if j in jobs.red]
    done = walk(bulk, {"limit": "100", "status": "succeeded"})
    assert ids(done) == [j for j in jobs.order if j in jobs.checkpoints]
    assert {j["status"] for p in done for j in p["items"]} == {"succeeded"}
    queued_red = ids(walk(bulk, {"limit": "30", "status": "queued", "metadata[team]": "red"}))
    assert queued_red == [j for j in jobs.order if j in jobs.records and j in jobs.red]
    assert ids(walk(bulk, {"limit": "30", "status": "running"})) == []


def test_a_lost_index_is_rebuilt_from_the_artifact_store(svc: Stack, bulk: httpx.Client, jobs: Jobs) -> None:
    """As after a flush, for this tenant only: the index and its marker gone, the records too."""
    assert svc.r.exists(store.k_indexed(TENANT))
    svc.r.delete(store.k_index(TENANT), store.k_indexed(TENANT))
    got = ids(walk(bulk, {"limit": "100"}))
    assert got == [j for j in jobs.order if j in jobs.checkpoints]  # the records are not in the index now
    assert svc.r.exists(store.k_indexed(TENANT)) and not svc.r.exists(store.k_reindex_lock(TENANT))
    assert svc.r.zcard(store.k_index(TENANT)) == len(jobs.checkpoints)
    # a rebuild merges: a job created while the index is rebuilt (its entry already there) keeps its entry
    svc.r.delete(store.k_indexed(TENANT))
    late = store.new_job_id()
    Lifecycle(svc.r, svc.data_dir).create(JobRef(late, "erasure", TENANT), fields={"base_model": "tiny"},
                                          created=time.time(), idem_key=None, body_hash="", idem_ttl_s=60,
                                          limit=0, data={})
    jobs.records.add(late)
    first = bulk.get("/v1/erasures", params={"limit": "1"}).json()
    assert [j["id"] for j in first["items"]] == [late] and first["next_cursor"]


def test_jobs_created_at_the_same_instant_are_each_listed_once(svc: Stack, bulk: httpx.Client, jobs: Jobs) -> None:
    """Ties on the index score (the cursor's score) are ordered by id, and the cursor skips exactly those seen."""
    storage = FileStorage(svc.data_dir)
    same = time.time() + 3600  # newer than every other job of the tenant
    tied = sorted((store.new_job_id() for _ in range(3)), reverse=True)
    for jid in tied:
        store.write_manifest(storage, TENANT, jid, {"id": jid, "tenant": TENANT, "created_at": same, "files": {}})
        jobs.checkpoints.add(jid)
    svc.r.delete(store.k_indexed(TENANT))  # the next listing merges them in from the store
    seen, cursor = [], None
    for _ in range(4):
        page = bulk.get("/v1/erasures", params={"limit": "1", **({"cursor": cursor} if cursor else {})}).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
    assert seen[:3] == tied and seen[3] not in tied and cursor
