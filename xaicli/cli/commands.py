"""The registered subcommands, in `xai --help` order. Only working commands are listed.

Each command module imports torch, matplotlib and the model stack inside its
function, never at module top, so this import stays cheap.
"""

from xaicli.cli.attribute import attribute
from xaicli.cli.cam import cam
from xaicli.cli.predict import predict
from xaicli.cli.stats import stats
from xaicli.cli.render import render
from xaicli.cli.report import report

COMMANDS: list = [
    ("predict", predict),
    ("attribute", attribute),
    ("cam", cam),
    ("stats", stats),
    ("render", render),
    ("report", report),
]
