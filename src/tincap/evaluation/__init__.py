"""Figures, per-class tables, submissions, caption metrics, cross-run reports and Grad-CAM."""
