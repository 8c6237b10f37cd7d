"""The prompt guard (erasepro_core/guard.py): built on the bundled canvas model it flags prompts naming or
misspelling the erased character and passes the preserve set; it round-trips through safetensors/JSON; and
through the real service (`erasepro serve`: embedded Redis, RQ worker, API) an erasure with
``prompt_guard: "refuse"`` answers 422 with the reason for such a prompt and generates for others, while ``"log"``
generates and records the flag."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

pytest.register_assert_rewrite("service_fixtures")
from service_fixtures import SERVE_KEY, start_serve, submit, wait_for, wait_status  # noqa: E402

from app.embedded import free_port, stop_process  # noqa: E402

TARGET = "zorblax"
PRESERVE = ["a red circle", "a blue square and a green star", "captain plimbo and a red moon", "mister quozzle",
            "a pink heart next to a cyan bar"]


@pytest.fixture(scope="module")
def canvas():
    from erasepro_core.pipeline import load_pipeline

    return load_pipeline("canvas", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def guard(canvas):
    from erasepro_core.guard import build_guard

    return build_guard(canvas, [TARGET], PRESERVE[:3], PRESERVE[3:])


def test_guard_flags_the_target_and_its_misspelling_not_the_preserve_set(canvas, guard) -> None:
    flags = guard.flags(canvas, ["zorblax and a red circle", "a photo of zorblaxx with a blue star", *PRESERVE])
    assert flags.tolist() == [True, True] + [False] * len(PRESERVE)
    v = guard.check(canvas, "a drawing of zorblax")
    assert v.flagged and v.nearest == TARGET and "zorblax" in v.reason() and v.score >= v.threshold
    assert not guard.check(canvas, "a red circle").flagged


def test_common_words_calibrate_the_thresholds(canvas) -> None:
    """Pieces of a made-up name ("belly", "weather") sit near everyday words; calibrated on the preserve prompts
    alone the guard flags dozens of the 2,000 most common words (86 with the current canvas text tower, over 100
    with the previous one), calibrated on them too it flags none of them and still flags the name."""
    from erasepro_core.guard import build_guard, common_words

    name = "auntie bellyweather"
    words = common_words(canvas.tokenizer, 2000, [name])
    assert len(words) == 2000 and "the" in words and "x" in words and "auntie" not in words
    assert all(w.isalpha() and w.islower() for w in words)
    assert all(len(w) >= 3 for w in common_words(canvas.tokenizer, 500, [name], min_letters=3))
    bare = build_guard(canvas, [name], PRESERVE[:3], PRESERVE[3:], neutral_words=0, modifiers=())
    calibrated = build_guard(canvas, [name], PRESERVE[:3], PRESERVE[3:])
    assert calibrated.stats["neutral_words"] == 2000
    assert bare.flags(canvas, words).sum() > 50
    assert calibrated.flags(canvas, words).sum() == 0
    assert calibrated.flags(canvas, [name, f"a photo of {name} and a red star"]).all()


def test_prompt_modifiers_calibrate_the_thresholds(canvas) -> None:
    """A name's fragment can sit near the boilerplate phrase ", high quality" though near neither word alone
    (measured on canvas at ten styles): calibrated on the prompt modifiers too, the guard passes such prompts and
    still flags the name."""
    from erasepro_core.guard import PROMPT_MODIFIERS, build_guard

    name = "esmeralda vinterberg"
    tagged = [f"a red plus, {m}" for m in ("high quality", "detailed", "4k", "trending")]
    bare = build_guard(canvas, [name], PRESERVE[:3], PRESERVE[3:], modifiers=())
    calibrated = build_guard(canvas, [name], PRESERVE[:3], PRESERVE[3:])
    assert calibrated.stats["modifiers"] == len(PROMPT_MODIFIERS) and bare.stats["modifiers"] == 0
    assert bare.flags(canvas, tagged).any()
    assert not calibrated.flags(canvas, tagged).any()
    assert calibrated.flags(canvas, [f"a red plus by {name}", f"{name} style, a moon"]).all()


def test_the_margin_is_relative_to_the_room_above_the_calibration(canvas) -> None:
    """τ_j = c_j + m·(1 − c_j): a guard built with margin m flags what a margin-0 guard scores at m or more."""
    from erasepro_core.guard import build_guard

    g0 = build_guard(canvas, [TARGET], PRESERVE[:3], PRESERVE[3:], margin=0.0)
    g = build_guard(canvas, [TARGET], PRESERVE[:3], PRESERVE[3:], margin=0.4)
    assert torch.allclose(g.thresholds, g0.thresholds + 0.4 * (1 - g0.thresholds))
    prompts = ["zorblax", "zorblox and a moon", "zor blax", "a green x shape", "a red circle", *PRESERVE]
    s0 = g0.scores(canvas, prompts)
    assert (g.flags(canvas, prompts) == (s0 >= 0.4)).all() and (s0 >= 0).sum() > (s0 >= 0.4).sum() > 0
    with pytest.raises(ValueError, match="margin"):
        build_guard(canvas, [TARGET], PRESERVE[:3], PRESERVE[3:], margin=1.0)


def test_guard_round_trips_and_refuses_malformed_files(canvas, guard, tmp_path: Path) -> None:
    from erasepro_core.delta import save_tensors
    from erasepro_core.guard import GUARD_JSON, GUARD_TENSORS, GuardFormatError, PromptGuard

    guard.save(tmp_path)
    back = PromptGuard.load(tmp_path)
    prompts = ["zorblax", "a red circle", "the character zorblax and a moon"]
    assert back.targets == [TARGET] and back.max_tokens == guard.max_tokens
    assert torch.allclose(torch.tensor(back.scores(canvas, prompts)), torch.tensor(guard.scores(canvas, prompts)),
                          atol=1e-4)
    meta = json.loads((tmp_path / GUARD_JSON).read_text())
    (tmp_path / GUARD_JSON).write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(GuardFormatError, match="format"):
        PromptGuard.load(tmp_path)
    (tmp_path / GUARD_JSON).write_text(json.dumps(meta))
    save_tensors(tmp_path / GUARD_TENSORS, {"signature": torch.zeros(3, 4), "centre": torch.zeros(4),
                                            "factor": torch.zeros(5, 5), "thresholds": torch.zeros(3),
                                            "owner": torch.zeros(3, dtype=torch.int32)})
    with pytest.raises(GuardFormatError, match="fit"):
        PromptGuard.load(tmp_path)


def test_spec_option_is_off_by_default_and_validated() -> None:
    from pydantic import ValidationError

    from erasepro_core.spec import ErasureSpec

    assert ErasureSpec.model_validate({"edits": [{"target": "a"}]}).prompt_guard == "off"
    with pytest.raises(ValidationError):
        ErasureSpec.model_validate({"edits": [{"target": "a"}], "prompt_guard": "block"})


# ------------------------------------------------------------------------------------------- through the service
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    tmp = tmp_path_factory.mktemp("guard")
    for _ in range(2):  # the embedded Redis may take the port chosen for the API first: another port
        port = free_port()
        proc = start_serve(tmp, port, {"ERASEPRO_BUNDLED": "1"})

        def ready(proc=proc, port=port) -> bool:
            if proc.poll() is not None:
                return True
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, "serve to be ready")
        if proc.poll() is None:
            break
    assert proc.poll() is None, (tmp / "serve.log").read_text(errors="replace")[-4000:]
    try:
        yield port, tmp
    finally:
        stop_process(proc, grace_s=60)


def test_generation_refuses_or_logs_prompts_the_guard_flags(served: tuple[int, Path]) -> None:
    port, tmp = served
    gen = {"steps": 2, "width": 32, "height": 32, "seed": 0}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                      headers={"Authorization": f"Bearer {SERVE_KEY}"}) as c:
        ids = {}
        for mode in ("refuse", "log"):
            ids[mode] = submit(c, {"base_model": "canvas", "edits": [{"target": TARGET, "anchor": ""}],
                                   "options": {"prompt_guard": mode}})
        plain = submit(c, {"base_model": "canvas", "edits": [{"target": TARGET, "anchor": ""}]})
        try:
            for job in (*ids.values(), plain):
                assert wait_status(c, job)["status"] == "succeeded", (tmp / "serve.log").read_text()[-4000:]
            manifest = json.loads((tmp / "data" / "tenants" / "acme" / "erasures" / ids["refuse"]
                                   / "manifest.json").read_text())
            assert {"guard.safetensors", "guard.json"} <= set(manifest["files"])
            assert manifest["guard"]["mode"] == "refuse" and manifest["guard"]["targets"] == [TARGET]

            refused = c.post(f"/v1/erasures/{ids['refuse']}/generate", json={"prompt": "zorblax and a red moon",
                                                                             **gen})
            assert refused.status_code == 422, refused.text
            body = refused.json()
            assert "prompt guard" in body["detail"] and body["guard"]["flagged"] and body["guard"]["nearest"] == TARGET
            assert body["job"]["status"] == "failed"
            ok = c.post(f"/v1/erasures/{ids['refuse']}/generate", json={"prompt": "a red circle", **gen})
            assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"

            logged = c.post(f"/v1/erasures/{ids['log']}/generate", json={"prompt": "zorblax and a red moon", **gen})
            assert logged.status_code == 200, logged.text
            view = c.get(f"/v1/generations/{logged.headers['x-erasepro-generation']}").json()
            assert view["guard"]["flagged"] and view["guard"]["mode"] == "log"

            # without the option nothing is built or checked
            unguarded = c.post(f"/v1/erasures/{plain}/generate", json={"prompt": "zorblax and a red moon", **gen})
            assert unguarded.status_code == 200
            assert "guard" not in c.get(f"/v1/generations/{unguarded.headers['x-erasepro-generation']}").json() \
                or c.get(f"/v1/generations/{unguarded.headers['x-erasepro-generation']}").json()["guard"] is None
        finally:
            for job in (*ids.values(), plain):
                c.delete(f"/v1/erasures/{job}")
