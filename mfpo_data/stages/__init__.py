"""The stages after the source, one file each, numbered in pipeline order; `base.py` is their protocol."""
