"""Time budgets: `budget=30m` measures the run's speed on its first steps (`calibration`), chooses the network size and
epochs that fit (`plan`), and guards the fit against a machine that slows down afterwards (`deadline`)."""
