"""Soft-token attack (UnlearnDiff-style): continuous token embeddings at ``{}`` of a harmless template,
norm-bounded by the largest real token embedding, optimised with Adam so that the *edited* model denoises
images the *unedited* model drew of the target:  min_e E_{t,ε} ‖ε_edited(x_t, t, c(e)) − ε‖²,  ‖e_k‖ ≤ max‖E_v‖.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from erasepro_core.adapters import TextTower, adapter_for
from erasepro_core.attacks.result import AttackResult, JudgeFn, Progress, Reporter
from erasepro_core.attacks.sampling import DEFAULT_SAMPLING, Clock, Sampling, encode, instance_seeds, judged, sample

MAX_STEPS = 2000
MAX_TOKENS = 8


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module) -> Iterator[None]:
    """No parameter gradients inside (only the attack's own tensors get them); flags restored after."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)


def single_tower(pipe) -> TextTower:
    adapter = adapter_for(pipe)
    if len(adapter.towers) != 1:
        raise ValueError("the embedding attacks support single-text-encoder pipelines (SD-1.x/2.x)")
    return adapter.towers[0]


def slot_ids(tokenizer, templates: Sequence[str], n_tokens: int) -> tuple[torch.Tensor, list[list[int]]]:
    """Token ids (n, L) of each template with ``n_tokens`` placeholder slots at ``{}``, and the slot positions."""
    n_max = int(tokenizer.model_max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows, slots = [], []
    for t in templates:
        pre, post = (s.strip() for s in t.split("{}", 1))
        a = tokenizer(pre, add_special_tokens=False)["input_ids"] if pre else []
        b = tokenizer(post, add_special_tokens=False)["input_ids"] if post else []
        row = [tokenizer.bos_token_id, *a, *([pad] * n_tokens), *b, tokenizer.eos_token_id]
        if len(row) > n_max:
            raise ValueError(f"template {t!r} with {n_tokens} soft token(s) does not fit {n_max} positions")
        slots.append(list(range(1 + len(a), 1 + len(a) + n_tokens)))
        rows.append(row + [pad] * (n_max - len(row)))
    return torch.tensor(rows), slots


def context_from_embeddings(tower: TextTower, token_embeds: torch.Tensor) -> torch.Tensor:
    """Context (n, L, d) the tower gives token embeddings (n, L, d_tok) — differentiable in them."""
    h = tower._inner.embeddings(inputs_embeds=token_embeds)
    for i in range(tower.n_context_layers):
        h = tower.layer(i, h)[0]
    return tower.to_context(h)


def soft_token(edited, unedited, target: str, judge: JudgeFn, budget: int, seed: int = 0, *,
               templates: Sequence[str], n_tokens: int = 1, refs: int = 2, lr: float = 0.01,
               checkpoints: Sequence[int] | None = None, sampling: Sampling = DEFAULT_SAMPLING,
               progress: Progress | None = None) -> AttackResult:
    """One soft prompt per template (instance); ``budget`` Adam steps, each on ``refs`` reference images per
    instance. ASR at a checkpoint = share of (instance, reference seed) images the edited model draws from the
    soft prompt (same seed as the reference) that the judge scores as the target."""
    if not 0 <= budget <= MAX_STEPS or not 1 <= n_tokens <= MAX_TOKENS:
        raise ValueError(f"soft_token: budget must be in 0..{MAX_STEPS}, n_tokens in 1..{MAX_TOKENS}")
    report, clock = Reporter(progress, "soft_token"), Clock(sampling.max_seconds)
    tower = single_tower(edited)
    marks = sorted({c for c in (checkpoints or [budget]) if 0 <= c <= budget} | {budget})
    n = len(templates)
    seeds = [s for s in instance_seeds(seed, n * refs)]
    device = edited.unet.device
    with torch.no_grad():
        prompts = [t.format(target) for t in templates for _ in range(refs)]
        ctx_ref = encode(unedited, prompts)
        size = int(unedited.unet.config.sample_size) * int(getattr(unedited, "vae_scale_factor", 8))
        uncond = encode(unedited, [""]).expand(len(prompts), -1, -1)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        x0 = unedited(prompt_embeds=ctx_ref, negative_prompt_embeds=uncond, height=size, width=size,
                      num_inference_steps=sampling.steps, guidance_scale=sampling.guidance, generator=gens,
                      output_type="latent").images.detach()
    ids, slots = slot_ids(edited.tokenizer, templates, n_tokens)
    table = tower._inner.embeddings.token_embedding.weight.detach()
    bound = float(table.norm(dim=1).max())
    g = torch.Generator().manual_seed(seed)
    base = table[ids.to(table.device)].clone()
    rows = torch.tensor([r for r, _ in enumerate(slots) for _ in range(n_tokens)])
    cols = torch.tensor([c for s in slots for c in s])
    init = table[torch.randint(len(table), (len(rows),), generator=g).to(table.device)]
    e = init.clone().float().requires_grad_(True)
    opt = torch.optim.Adam([e], lr=lr)
    sched = edited.scheduler
    alphas = sched.alphas_cumprod
    n_train = int(sched.config.num_train_timesteps)

    def contexts() -> torch.Tensor:
        emb = base.index_put((rows, cols), e.to(base.dtype))
        return context_from_embeddings(tower, emb)

    curve: list[tuple[int, float]] = []
    images, scores = np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0)
    losses: list[float] = []

    def evaluate(step: int) -> None:
        nonlocal images, scores
        with torch.no_grad():
            ctx = contexts().repeat_interleave(refs, 0)
        images = sample(edited, ctx, seeds, sampling)
        scores = judged(judge, images)
        curve.append((step, float((scores >= sampling.threshold).mean())))

    with frozen(edited.unet, edited.text_encoder), torch.enable_grad():
        step = 0
        if 0 in marks:
            evaluate(0)
        while step < budget and not clock.expired:
            t = torch.randint(0, n_train, (len(x0),), generator=g)
            noise = torch.randn(x0.shape, generator=g).to(device)
            a = alphas[t].to(device).view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            ctx = contexts().repeat_interleave(refs, 0)
            eps = edited.unet(xt, t.to(device), encoder_hidden_states=ctx.to(edited.unet.dtype)).sample
            loss = torch.nn.functional.mse_loss(eps.float(), noise.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():  # project back into the norm ball of real token embeddings
                e.mul_((bound / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0))
            losses.append(float(loss.detach()))
            step += 1
            if step in marks:
                evaluate(step)
            report(step / max(budget, 1))
    if not curve or curve[-1][0] != step:
        evaluate(step)
    report(1.0)
    hit = scores >= sampling.threshold
    emb = e.detach().cpu().numpy().reshape(n, n_tokens, -1)
    return AttackResult(
        attack="soft_token", target=target, budget=budget, asr=curve[-1][1], curve=curve,
        found=[emb[i // refs] for i in range(len(hit)) if hit[i]], images=images, scores=scores,
        queries=step * len(x0), seconds=clock.elapsed,
        details={"n_tokens": n_tokens, "refs": refs, "lr": lr, "norm_bound": round(bound, 4),
                 "loss_first": round(losses[0], 5) if losses else None,
                 "loss_last": round(losses[-1], 5) if losses else None, "steps_done": step},
    )
