"""P01 NAR: sample quality at equal training budget — NAR vs raster AR (LlamaGen) vs PAR-4X.

One VQ tokenizer is trained on the embedded digits (:mod:`nar_jax.experiment`, ``tiny``
preset), the training images are encoded once, and three generators with the same backbone,
initialisation seed, optimizer, batch and number of steps are trained on the same token grids in
the three orders. Each then samples ``num_per_class`` images per class (same CFG scale,
temperature 1). Scores (:mod:`nar_jax.evaluation`): class accuracy of the samples under an MLP
classifier trained on the real training images, and the Frechet distance between the classifier's
features of the samples and of the held-out real images. Reference rows: held-out real images,
and real images passed through the tokenizer (the best any generator of these tokens can do).
Whichever order wins is reported as measured; one training seed per order.

    python -m benchmarks --only nar_quality [--full]
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

from core.data import ArraySource
from core.tables import Table, write_table
from core.train import TrainConfig
from nar_jax import evaluation, experiment
from nar_jax.data import tokenize_source

ORDERS = {"NAR": "nar", "raster AR": "raster", "PAR-4X": "par4"}

SETTINGS = {
    # 16x16 px digits -> 8x8 tokens; one device (the fake host devices only slow tiny models).
    True: {"image_size": 16, "tokenizer_steps": 80, "steps": 120, "batch": 32, "per_class": 5,
             "classifier_steps": 150, "num_devices": 1},
    # 32x32 px digits -> 16x16 tokens (the paper's grid), longer training, all devices.
    False: {"image_size": 32, "tokenizer_steps": 1500, "steps": 3000, "batch": 64, "per_class": 50,
              "classifier_steps": 600, "num_devices": 0},
}


def _config(s: dict) -> experiment.NARExperimentConfig:
    base = experiment.PRESETS["tiny"][1]
    quiet = {"progress": False, "tensorboard": False, "log_every": 50}
    return dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, image_size=s["image_size"]),
        tokenizer_train=TrainConfig(steps=s["tokenizer_steps"], batch_size=s["batch"], **quiet),
        train=TrainConfig(steps=s["steps"], batch_size=s["batch"], **quiet),
        sample=dataclasses.replace(base.sample, num_per_class=s["per_class"],
                                   batch_size=10 * s["per_class"]),
        evaluation=dataclasses.replace(base.evaluation, hidden=64, steps=s["classifier_steps"]),
        num_devices=s["num_devices"],
    )


def run(quick: bool, results_dir: Path) -> list[Path]:
    s = SETTINGS[quick]
    config = _config(s)
    experiment.check_config(config)
    mesh = experiment.make_mesh(config)
    bar = tqdm(total=3 + len(ORDERS), desc="nar quality")
    tokenizer = experiment.tokenizer_stage(config, mesh)
    tokens = experiment.token_source(config, tokenizer)
    bar.update(1)
    classes = experiment.num_classes(config)
    classifier = evaluation.train_classifier(experiment.real_images(config, "train"), classes,
                                             config.evaluation, mesh)
    bar.update(1)
    test = experiment.real_images(config, "test")
    images, labels = test.arrays["image"], test.arrays["label"]
    half = len(labels) // 2
    reference = images[half:]
    rows = []
    real = evaluation.sample_quality(classifier, images[:half], labels[:half], reference)
    rows.append({"model": "real held-out images", "accuracy": real["accuracy"],
                 "Frechet distance": real["frechet_distance"]})
    recon_tokens = tokenize_source(tokenizer, ArraySource({"image": images[:half]}), progress=False)
    recon = experiment.decode_images(tokenizer, recon_tokens.arrays["tokens"], experiment.grid(config))
    rec = evaluation.sample_quality(classifier, recon, labels[:half], reference)
    rows.append({"model": "tokenizer reconstructions", "accuracy": rec["accuracy"],
                 "Frechet distance": rec["frechet_distance"]})
    bar.update(1)
    sample_labels = experiment.class_labels(config)
    for name, order in ORDERS.items():
        c = dataclasses.replace(config, order=order)
        start = time.perf_counter()
        result = experiment.generator_stage(c, tokens, mesh)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        generated = experiment.decode_images(
            tokenizer, experiment.generate(c, result.model, sample_labels), experiment.grid(c))
        sample_s = time.perf_counter() - start
        q = evaluation.sample_quality(classifier, generated, sample_labels, reference)
        rows.append({
            "model": name, "decode steps": experiment.plan(c).num_steps,
            "final train loss": result.history[-1]["loss"], "accuracy": q["accuracy"],
            "Frechet distance": q["frechet_distance"], "train s": train_s, "sample s": sample_s,
        })
        bar.update(1)
    bar.close()
    generators = rows[2:]
    best_acc = max(generators, key=lambda r: r["accuracy"])["model"]
    best_fd = min(generators, key=lambda r: r["Frechet distance"])["model"]
    grid = experiment.grid(config)
    notes = (
        f"Embedded task: scikit-learn digits upsampled to {s['image_size']}x{s['image_size']} px, "
        f"VQ tokenizer ({config.tokenizer.codebook_size} codes) -> {grid[0]}x{grid[1]} tokens. "
        f"Same `tiny` backbone (dim 64, 2 layers), seed, AdamW lr {config.learning_rate}, batch "
        f"{s['batch']}, {s['steps']} steps for every order (NAR adds its extra block + head, as "
        f"in the paper). {s['per_class']} samples per class, CFG {config.sample.cfg_scale}, "
        f"temperature 1. Classifier: MLP on pixels trained on the real training images "
        f"({s['classifier_steps']} steps); Frechet distance in its {config.evaluation.hidden}-d "
        f"penultimate features against {len(reference)} held-out real images (the real row uses "
        f"{half} other held-out images; the distance depends on sample size). One training seed: "
        f"differences of a few accuracy points are within noise. Measured winner: accuracy "
        f"{best_acc}, Frechet distance {best_fd}. Not comparable to the paper's ImageNet FIDs "
        f"(NAR-B 4.65 vs LlamaGen-B 5.46 vs PAR-B-4X 6.21). Times on one "
        f"{jax.devices()[0].device_kind} ({jax.devices()[0].platform}), not a speed benchmark "
        f"(see nar_throughput)."
    )
    table = Table(
        name="nar_quality" + ("" if quick else "_full"),
        title="Sample quality at equal training budget (embedded digits)",
        columns=["model", "decode steps", "final train loss", "accuracy", "Frechet distance",
                 "train s", "sample s"],
        rows=rows,
        notes=notes,
    )

    def plot(ax):
        names = [r["model"] for r in rows]
        ax.bar(names, [r["Frechet distance"] for r in rows], color="tab:blue")
        ax.set_ylabel("Frechet distance (classifier features), lower is better")
        for i, r in enumerate(rows):
            ax.annotate(f"acc {r['accuracy']:.2f}", (i, r["Frechet distance"]), ha="center",
                        va="bottom", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)

    return [write_table(table, results_dir, plot=plot)]


if __name__ == "__main__":
    import sys

    print(run("--full" not in sys.argv, Path("results")))
