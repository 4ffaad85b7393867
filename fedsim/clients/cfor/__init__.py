"""CFOR: ontology-driven multitask attribute learning and coarse-to-fine retrieval (options, ontology, data,
model, metrics, task, retrieval index, trained-run search)."""
