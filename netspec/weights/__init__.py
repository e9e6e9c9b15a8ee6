"""Pretrained weights: read them from where people have them and map them onto a spec by
structure (`mapper`), from files and published names (`sources`, `pretrained`)."""
