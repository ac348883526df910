"""The operators' dashboard: one static page and one JSON view built from the components."""
