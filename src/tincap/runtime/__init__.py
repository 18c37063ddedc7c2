"""What every command runs on: atomic files, checkpoint I/O, run directories, the entry wrapper and console, user
errors, progress bars, config resolvers, trackers and the trainer factory. It imports no other tincap package."""
