"""LightningModules: they own losses, metrics and optimisers around the plain networks of tincap.models."""
