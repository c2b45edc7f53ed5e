"""Thin Typer commands: parse options, call the library, write output."""
