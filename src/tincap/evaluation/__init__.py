"""Figures, per-class tables, submissions and (later) caption metrics, reports and Grad-CAM."""
