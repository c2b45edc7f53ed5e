"""RefineCAM: the product of the Grad-CAM++ maps of every --layer (one map), min-max scaled."""

from __future__ import annotations

from xaicli.explain.cams import CamMethod


class RefineCAM(CamMethod):
    name = "refinecam"
    summary = "product of the Grad-CAM++ maps of all --layer values (one map)"
    reference = "RefineCAM"
    notes = "product of the Grad-CAM++ maps of all --layer values: one map, key cam/refinecam/<l1>+<l2>"
    whole_model = True
    normalised = True
    requires = ("gradcam++",)
    min_layers = 2
    order = 170

    def combine(self, step):
        from xaicli.explain.cams._tools import minmax

        prod = None
        for layer in step.modules:                       # a module named twice counts once
            m = minmax(step.maps[("gradcam++", layer.name)])
            prod = m if prod is None else prod * m
        return ("+".join(la.name for la in step.layers), "+".join(la.path for la in step.modules), minmax(prod))
