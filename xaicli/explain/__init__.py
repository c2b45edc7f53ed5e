"""The methods, the engines that run them, targets, baselines and the evaluations that rerun the model.

How to add a method (one module, nothing else to edit)
======================================================

1. Create `xaicli/explain/attribution/<name>.py` (for `xai attribute`) or
   `xaicli/explain/cams/<name>.py` (for `xai cam`). Modules whose names start with `_`
   are helpers, not methods. Import no torch (nor numpy, grad-cam, captum ...) at the
   top of the module: the CLI imports every method module to build `--help` and shell
   completion. Import them inside the methods' functions.

2. Declare one class; defining it registers it (explain/registry.py):

       from xaicli.explain.attribution import AttributionMethod
       from xaicli.explain.registry import Option

       WINDOW = Option("window", int, 8, min=1, help="Occlusion: the square's side in pixels.")

       class Occlusion(AttributionMethod):
           name = "occlusion"                       # the --method value; aliases = ("...",)
           summary = "score drop when a square of the image is replaced by the baseline"
           reference, reference_package = "Occlusion", "captum.attr"    # what its test compares with
           checked = "equal to 1e-5"                # how closely (README table)
           notes = "..."                            # how we compute it (README table)
           options = (WINDOW,)                      # its own options: --window; shared ones
                                                    # (attribution.SAMPLES, ...): reuse the object
           baseline = True                          # one map per --baseline
           gradients = False
           # integral = True: a path integral (--steps, --quadrature, --tolerance, delta in meta)
           # tasks = ("classification",); in_all = False; order = 60

           def compute(self, step):                 # or job(): see below
               import torch
               ...                                  # step.scores(batch of occluded images) -> (n, T)

   A gradient-path attribution method returns from `job` one `integrated_gradients.Job`:
   the engine batches every job of an image in shared passes. Any other (perturbation,
   own backward rules) returns None there and implements `compute(step)` → (T, C, H, W),
   with `step.scores(batch)` a batched, chunked forward and `step.info` for its meta.
   Either way the engine stores the map under attr/<key>/<baseline or none> with its
   meta (explain/attribute.py). A method with its own backward rules (guided backprop,
   DeepLift) swaps them in for its pass with explain/backward_rules.py.
   A CAM method subclasses `cams.CamMethod` and overrides one step of the pipeline
   (explain/cam.py): `channel_weights(step)` → (T, C), or `cam_image(step)` → (T, h, w)
   before ReLU, optionally `scorers(...)` (other scores to differentiate) or, with
   `whole_model = True`, `combine(step)`, or with `input_channels = True` `input_map(step)`
   → (T, C, H, W), a signed map per input channel (Guided Grad-CAM); flags say what the
   pipeline must provide (`gradients`, `second_order`, `per_channel`, `target_independent`,
   `normalised`, `token_layers`, `requires`, `min_layers`). See the docstring of
   xaicli/explain/cams/__init__.py.
   A method that cannot explain some models (no ReLU for guided backprop's rule) says why
   in `unfit(adapter, image)`: named, it fails with that line; `--method all` leaves it out.

3. Its options are command-line options of `xai attribute` / `xai cam` at once
   (cli/methods.py builds them into the command's signature), reach the method as
   `options[name]`, and are stored in every map's meta, so `xai stats --randomize`
   redoes the map (explain/randomization.py) with no code of its own.

4. Add its test (against the reference named in `reference`), then regenerate the
   docs: `make man completions readme` (the `--method` choices and help, the man
   pages, completions and the README's method tables all come from the registry;
   tests/test_docs.py fails while they are stale).
"""
