"""Reference SAE training throughput in PyTorch, run by ``benchmarks/interp_sae_throughput.py``
in a separate interpreter (``/work/venv-ref``: torch CPU + sae-lens).

``--impl saelens``: SAELens's own training SAE (``TopKTrainingSAE`` / ``StandardTrainingSAE``)
stepped exactly as ``sae_lens.training.sae_trainer.SAETrainer._train_step`` does it:
``training_forward_pass`` (MSE + AuxK or L1), dead-latent bookkeeping, backward, gradient clip
at 1.0, Adam step. ``--impl torch``: the same computation written in plain PyTorch (for
interpreters without sae-lens; the benchmark labels it as such); ``--impl auto`` (default)
uses SAELens when it imports. Prints one JSON line with ``tokens_per_s`` per architecture.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

BATCHES_IN_MEMORY = 4  # random batches cycled through (throughput does not depend on the data)


def saelens_step_fn(arch: str, d_in: int, d_sae: int, k: int, l1: float, device: str):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    if arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k,
                                                    dtype="float32", device=device))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae,
                                                            l1_coefficient=l1, dtype="float32",
                                                            device=device))
    sae.train()
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-3)
    since_fired = torch.zeros(d_sae, device=device)
    coefficients = {name: (c.value if hasattr(c, "value") else c)
                    for name, c in sae.get_coefficients().items()}
    state = {"step": 0}

    def step(x):
        out = sae.training_forward_pass(TrainStepInput(
            sae_in=x, coefficients=coefficients, dead_neuron_mask=since_fired > 1000,
            n_training_steps=state["step"], is_logging_step=False))
        with torch.no_grad():
            did_fire = out.feature_acts.bool().float().sum(-2).bool()
            since_fired.add_(1)
            since_fired[did_fire] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        state["step"] += 1
        return out.loss

    return step


def torch_step_fn(arch: str, d_in: int, d_sae: int, k: int, l1: float, device: str):
    w_dec = torch.nn.functional.normalize(torch.randn(d_sae, d_in, device=device), dim=-1)
    params = {"W_enc": w_dec.T.clone().requires_grad_(),
              "b_enc": torch.zeros(d_sae, device=device, requires_grad=True),
              "W_dec": w_dec.clone().requires_grad_(),
              "b_dec": torch.zeros(d_in, device=device, requires_grad=True)}
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    since_fired = torch.zeros(d_sae, device=device)
    k_aux = d_in // 2

    def step(x):
        pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
        if arch == "topk":
            values, index = pre.topk(k, dim=-1)
            z = torch.zeros_like(pre).scatter(-1, index, torch.relu(values))
        else:
            z = torch.relu(pre)
        x_hat = z @ params["W_dec"] + params["b_dec"]
        loss = (x_hat - x).pow(2).sum(-1).mean()
        dead = since_fired > 1000
        if arch == "topk" and dead.any():
            aux_vals, aux_idx = pre.masked_fill(~dead, -torch.inf).topk(k_aux, dim=-1)
            aux = torch.zeros_like(pre).scatter(-1, aux_idx, torch.relu(aux_vals))
            residual = (x - x_hat).detach()
            loss = loss + (aux @ params["W_dec"] - residual).pow(2).sum(-1).mean()
        elif arch == "standard":
            loss = loss + l1 * (z * params["W_dec"].norm(dim=-1)).sum(-1).mean()
        with torch.no_grad():
            since_fired.add_(1)
            since_fired[(z != 0).any(0)] = 0
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("auto", "saelens", "torch"), default="auto")
    parser.add_argument("--archs", nargs="+", choices=("topk", "standard"),
                        default=["topk", "standard"])
    parser.add_argument("--d-in", type=int, default=384)
    parser.add_argument("--d-sae", type=int, default=1536)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--l1", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (as JAX's "
                        "default precision does on NVIDIA GPUs)")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    if args.threads:
        torch.set_num_threads(args.threads)
    impl = args.impl
    if impl == "auto":
        try:
            import sae_lens  # noqa: F401
            impl = "saelens"
        except ImportError:
            impl = "torch"
    import importlib.metadata as md

    version = md.version("sae-lens") if impl == "saelens" else None
    for arch in args.archs:
        torch.manual_seed(0)
        make = saelens_step_fn if impl == "saelens" else torch_step_fn
        step = make(arch, args.d_in, args.d_sae, args.k, args.l1, args.device)
        data = torch.randn(BATCHES_IN_MEMORY, args.batch, args.d_in, device=args.device)
        for i in range(args.warmup):
            step(data[i % BATCHES_IN_MEMORY])
        if args.device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(args.steps):
            loss = step(data[i % BATCHES_IN_MEMORY])
        loss.item()
        seconds = time.perf_counter() - start
        print(json.dumps({"impl": impl, "arch": arch, "seconds": seconds,
                          "tokens_per_s": args.batch * args.steps / seconds,
                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "device": args.device, "tf32": args.tf32,
                          "sae_lens": version}), flush=True)


if __name__ == "__main__":
    main()
