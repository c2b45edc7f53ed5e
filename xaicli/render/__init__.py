"""Figures from records (matplotlib only, never torch): `xai render` as a library.

    from xaicli.render import RenderOptions, render_records
    for path in render_records(records, "figs/", RenderOptions(styles=("signed",))):
        print(path)

`jobs(record, opts)` gives the figures without saving them (name + `build()`), for
callers that want the `matplotlib.figure.Figure` objects; `multi_jobs(records, opts)`
the parts of one figure of many records (`RenderOptions(layout="grid", rows=("record",))`).
"""

from xaicli.render.facets import KEYS
from xaicli.render.figure import Job, figure_name, jobs, multi_jobs, render_records, save
from xaicli.render.options import FORMATS, LAYOUTS, RenderOptions
from xaicli.render.scales import SCALES
from xaicli.render.styles import STYLES

__all__ = ["FORMATS", "KEYS", "LAYOUTS", "SCALES", "STYLES", "Job", "RenderOptions", "figure_name", "jobs",
           "multi_jobs", "render_records", "save"]
