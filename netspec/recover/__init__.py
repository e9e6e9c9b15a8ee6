"""Structure recovery: a flat graph of layers (from an imported model) to the spec a person
would write, with its branches, repetitions and blocks found again.

Pure: no onnx, no torch. `graph.py` holds the flat layers and turns their graph into a tree of
chains and branches; `fold.py` finds the blocks and repetitions; `text.py` writes the spec.
"""
