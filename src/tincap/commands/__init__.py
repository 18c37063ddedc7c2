"""One module per entry point, named like its root script (train.py) and its config (conf/train.yaml): each turns a
composed config into a run through the contracts of `tincap.tasks` and `tincap.inference`, never by a task's class."""
