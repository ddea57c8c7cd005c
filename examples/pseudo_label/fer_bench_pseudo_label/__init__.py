"""Pseudo-Label (Lee, 2013) for fer-bench: the method is in :mod:`.pseudo_label`, its settings
in ``pseudo_label.yaml``. Kept empty so that listing methods imports nothing heavy."""
