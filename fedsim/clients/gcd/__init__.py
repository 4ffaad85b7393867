"""GCD: group choreography diffusion with contrastive guidance (options, data, model, metrics, task)."""
