"""Serving: load a run once and answer recommendations with reasons (recommender), keep live
events durably (store), and the HTTP service over both (app)."""
