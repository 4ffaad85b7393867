"""SAC: fine-grained classification with a self-assessment classifier (options, data, model, metrics, task)."""
