"""Figures from records (matplotlib only, never torch): `xai render` as a library.

    from xaicli.render import RenderOptions, render_records
    for path in render_records(records, "figs/", RenderOptions(styles=("signed",))):
        print(path)

`jobs(record, opts)` gives the figures without saving them (name + `build()`), for
callers that want the `matplotlib.figure.Figure` objects.
"""

from xaicli.render.figure import Job, figure_name, jobs, render_records, save
from xaicli.render.options import FORMATS, LAYOUTS, RenderOptions
from xaicli.render.styles import SCALES, STYLES

__all__ = ["FORMATS", "LAYOUTS", "SCALES", "STYLES", "Job", "RenderOptions", "figure_name", "jobs",
           "render_records", "save"]
