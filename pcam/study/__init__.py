"""Budgeted experiments: the recipe study and the curves, their budgets and plans."""
