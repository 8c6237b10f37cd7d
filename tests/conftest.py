"""Shared fixtures: tiny pipelines built from configs (real CLIP tokenizer, random weights), a real S3 server and
an embedded Redis per test module."""

from __future__ import annotations

import copy

import pytest

from erasepro_core.pipeline import quiet_libraries

quiet_libraries()


@pytest.fixture(scope="session")
def sd_pipe():
    """A tiny SD-1.x pipeline. Tests must not modify it (erase never does; use applied_delta or a copy)."""
    from erasepro_core.tiny import tiny_sd_pipeline

    return tiny_sd_pipeline(seed=0)


@pytest.fixture(scope="session")
def sdxl_pipe():
    from erasepro_core.tiny import tiny_sdxl_pipeline

    return tiny_sdxl_pipeline(seed=0)


@pytest.fixture
def sd_copy(sd_pipe):
    return copy.deepcopy(sd_pipe)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible server (SeaweedFS, tests/s3_server.py) for one test module."""
    from s3_server import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory):
    """A real Redis server for one test module (the embedded one `erasepro serve` runs: no network, no password)."""
    from app.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_url(embedded_redis) -> str:
    return embedded_redis.url
