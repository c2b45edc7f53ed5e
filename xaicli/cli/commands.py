"""The registered subcommands, in `xai --help` order. Only working commands are listed."""

COMMANDS: list = []
