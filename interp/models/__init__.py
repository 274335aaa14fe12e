"""Transformers with named capture points: a GPT-style causal LM and a MiniLM (BERT) port."""
