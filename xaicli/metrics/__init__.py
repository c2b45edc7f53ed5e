"""Statistics, focus and localisation metrics on explanation maps and masks.

Pure numpy on purpose: `xai stats` without a model runs on a CPU host that never
imports torch. Every metric returns a Python float (or int) or `None` when it is
undefined for its input (empty mask, all-zero map, non-finite values); `None` is
written as JSON `null`, never NaN.
"""
