"""Recipes that chain the stages: the demo and the transfer experiments."""
