"""Tasks: LightningModules that own losses, metrics, optimisers and their outputs around the plain networks of
tincap.models, behind one contract (`task.Task`) that the commands drive; `loading` rebuilds one from its checkpoint."""
