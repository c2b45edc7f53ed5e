"""Records, streams, images and atomic writes. Never imports torch."""
