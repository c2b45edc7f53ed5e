"""Loading models into one adapter: task, labels, preprocessing and a logits forward."""
