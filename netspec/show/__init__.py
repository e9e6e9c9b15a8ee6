"""Look inside a network: its learned filters, the feature maps an input produces, and where
a prediction looks (gradient saliency, Grad-CAM). Imports torch and matplotlib.

    from netspec.show import load, filters, feature_maps, saliency, read_input
    net = load("runs/mnist_cnn-20250101-120000")      # or a .safetensors + spec, or a spec
    grid = filters(net)                                # grid.tiles: [16, 3, 3] in [0, 1]
    x, caption, label = read_input(net, "7")           # the 8th validation example
    maps = feature_maps(net, x)                        # the input, then each stage's maps
    s = saliency(net, x)                               # s.gradcam: [28, 28] in [0, 1]
    save(filters_figure(grid), "filters.png")
"""

from netspec.show.pictures import Grid, Saliency, feature_maps, filters, saliency
from netspec.show.render import filters_figure, maps_figure, mosaic, saliency_figure, save
from netspec.show.source import Loaded, load, read_input

__all__ = [
    "Grid",
    "Loaded",
    "Saliency",
    "feature_maps",
    "filters",
    "filters_figure",
    "load",
    "maps_figure",
    "mosaic",
    "read_input",
    "saliency",
    "saliency_figure",
    "save",
]
