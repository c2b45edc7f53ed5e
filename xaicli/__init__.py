"""xai: explain PyTorch image models from the shell."""

__version__ = "0.1.0"
