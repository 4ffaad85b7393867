"""CDL: federated steering regression with a contrastive divergence loss (options, data, model, task)."""
