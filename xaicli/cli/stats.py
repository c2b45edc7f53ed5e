"""`xai stats`: numbers about the maps in records, one JSON object per record × map × target."""

from __future__ import annotations

from typing import List, Optional

import typer
from typing_extensions import Annotated

from xaicli.cli.options import Arch, ArchArgs, Classes, Device, RecordInputs, TrustPickle
from xaicli.explain.faithfulness import BASELINES as PERTURB_BASELINES
from xaicli.io.masks import MaskSource
from xaicli.metrics import registry as metric_registry

FORMATS = ("jsonl", "csv", "json", "markdown")
METRICS_HELP = ("Compute only these: groups (" + ", ".join(metric_registry.GROUPS) + ") or metric names ("
                + ", ".join(metric_registry.metrics()) + "), comma-separated or repeated. Default: all but "
                + ", ".join(m.name for m in metric_registry.metrics().values() if not m.default)
                + " (randomisation also with --randomize), the model's only with -m; a metric that runs the "
                "model needs -m.")

HELP = """Statistics, focus, localisation, faithfulness and sanity checks of explanation maps.

Reads records (stdin, .npz files, tar streams, folders) and writes one flat JSON object
per record x map x target (JSON Lines), or a CSV table (--format csv), or one JSON array
(--format json). Without -m it needs no model and imports no torch.

\b
  xai attribute -m builtin:shapes-seg scans/ | xai stats > stats.jsonl
  xai stats records.tar --mask masks/ --format csv --summary > table.csv
  xai stats records.tar -m builtin:shapes-seg --steps 20 | jq .deletion_auc
  xai stats records.tar -m builtin:shapes-cls --metrics faithfulness -f markdown

Keys, in this order (README, "xai stats", has the full definitions): id source task map
kind method layer baseline target target_index target_kind, then the keys of each metric
asked for (--metrics; * = not computed by default, model metrics need -m), and stat n
with --summary:

\b
{keys}

Maps: an attribution (T,C,H,W) is summed over channels, signed, for every spatial
metric; metrics of |a| take |.| after that sum. The value statistics (mean ... neg_mass,
per-channel R/G/B sums and means) use the raw values; R/G/B are null unless C = 3. A CAM
(T,H,W) is used as it is.

null means undefined, never an error: focus_ratio with an empty or full mask or zero
attribution outside it (the infinite ratio; focus_fraction is then 1); every mask
metric without a mask (a classifier gets them only from --mask or gt/mask); pointing_game
for a constant map; mass_accuracy without positive mass; dice/iou when both regions are
empty; std of fewer than two values; and every spatial metric of a map holding NaN or
inf (nonfinite counts them; value statistics use the finite values).
"""


def stats(
    inputs: RecordInputs = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl (default), csv, json (one array), or markdown: the "
                                                      "summary as one table, a row per map, mean ± std per "
                                                      "metric, ↑/↓ = better.",
                                     autocompletion=lambda: list(FORMATS))] = "jsonl",
    summary: Annotated[bool, typer.Option("--summary", help="Add aggregate rows: mean, std (n-1), median, min, "
                                                            "max of every metric per map x target over all "
                                                            "records (key 'stat'; 'n' rows aggregated).")] = False,
    mask: Annotated[Optional[str], typer.Option("--mask", help="Ground-truth region: a mask image (or .npy), "
                                                               "non-zero = inside, for every record; or a folder "
                                                               "of masks named by record id (file stem). Default: "
                                                               "the record's gt/mask, when present.",
                                                show_default=False)] = None,
    maps: Annotated[Optional[List[str]], typer.Option("--map", help="Only maps whose key matches this glob, e.g. "
                                                                     "'attr/*' or 'cam/gradcam/*' (repeatable).",
                                                      show_default=False)] = None,
    top_k: Annotated[float, typer.Option("--top-k", help="Pixels for topk_intersection: a fraction of the image "
                                                         "when < 1, else a pixel count.")] = 0.05,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write to FILE (atomically) instead of "
                                                                          "stdout.", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Run the model for deletion/insertion "
                                                                      "(and --randomize): the model the records "
                                                                      "were made with (see xai predict -m). "
                                                                      "Without it no model is loaded.",
                                                 show_default=False)] = None,
    arch: Arch = None,
    arch_args: ArchArgs = None,
    classes: Classes = None,
    trust_pickle: TrustPickle = False,
    device: Device = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="With -m: perturbed images per "
                                                                       "forward.")] = 16,
    steps: Annotated[int, typer.Option("--steps", help="With -m: fractions on the deletion/insertion axis "
                                                       "(steps + 1 forwards per curve).")] = 20,
    perturb_baseline: Annotated[str, typer.Option("--perturb-baseline",
                                                  help="With -m: what deleted pixels become: " + "; ".join(
                                                      f"{k} ({v})" for k, v in PERTURB_BASELINES.items()) + ".",
                                                  autocompletion=lambda: list(PERTURB_BASELINES))] = "black",
    randomize: Annotated[bool, typer.Option("--randomize", help="With -m: cascading parameter randomisation "
                                                                "from the top layer down; Spearman of each "
                                                                "recomputed map with the original.")] = False,
    rand_steps: Annotated[int, typer.Option("--rand-steps", help="With --randomize: maps recomputed along the "
                                                                 "cascade (the first after the top layer, the "
                                                                 "last with every layer randomised; at least "
                                                                 "2).")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random draw of the model metrics "
                                                     "(randomisation, ROAD's noise, random subsets), mixed with "
                                                     "the record id, map and target.")] = 0,
    metrics: Annotated[Optional[List[str]], typer.Option("--metrics", help=METRICS_HELP, show_default=False,
                                                         autocompletion=metric_registry.choices)] = None,
    road_percentiles: Annotated[Optional[str], typer.Option("--road-percentiles", help="With --metrics road: "
                                                            "percentiles p, comma-separated; at p, (100-p)% of "
                                                            "the pixels are imputed.  [default: 10,20,...,90]",
                                                            show_default=False)] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", min=1, help="Random draws per map: "
                                                   "faithfulness_correlation's subsets (default 100), "
                                                   "monotonicity's values per step (10), max_sensitivity's "
                                                   "and local_lipschitz's noise draws (10).",
                                                   show_default=False)] = None,
    subset_size: Annotated[int, typer.Option("--subset-size", min=1, help="Input features (channel values) "
                                             "perturbed together: faithfulness_correlation's random subset, "
                                             "monotonicity's step.")] = 224,
    noise: Annotated[float, typer.Option("--noise", min=0.0, help="Input noise of max_sensitivity (uniform, "
                                         "this half-width) and local_lipschitz (Gaussian, this sigma), in "
                                         "pixel values scaled to [0, 1].")] = 0.05,
    window: Annotated[int, typer.Option("--window", min=1, help="With --metrics sufficiency: records compared "
                                        "with each other, in consecutive windows of this many (Quantus's "
                                        "batch_size). A window's rows are written when it is read; memory "
                                        "holds one window's maps.")] = 64,
    sufficiency_threshold: Annotated[float, typer.Option("--sufficiency-threshold", min=0.0, help="Normalised "
                                                         "distance at or below which two maps count as alike "
                                                         "(sufficiency; Quantus's threshold).")] = 0.6,
) -> None:
    import sys

    from xaicli.cli.pipeline import progress
    from xaicli.cli.state import log
    from xaicli.errors import XaiUsageError
    from xaicli.explain.evaluation.road import parse_percentiles
    from xaicli.io.inputs import resolve
    from xaicli.metrics import report

    if fmt not in FORMATS:
        raise XaiUsageError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if output not in (None, "-"):
        from xaicli.io.outputs import check_file_output

        check_file_output(output, "the table goes", "stats.csv")
    if not (top_k > 0 and top_k != float("inf")):
        raise XaiUsageError(f"--top-k {top_k}: must be a finite number > 0 (a fraction < 1 or a pixel count)")
    if model is None and randomize:
        raise XaiUsageError("--randomize re-computes maps with the model: pass -m MODEL")
    if steps < 1 or rand_steps < 1 or batch_size < 1:
        raise XaiUsageError("--steps, --rand-steps and --batch-size must be at least 1")
    if perturb_baseline not in PERTURB_BASELINES:
        raise XaiUsageError(f"--perturb-baseline {perturb_baseline!r}: use one of {', '.join(PERTURB_BASELINES)}")

    percentiles = parse_percentiles(road_percentiles)
    chosen = metric_registry.resolve(metrics, model=model is not None, randomize=randomize)
    keep = set(report.ID_COLUMNS).union(*(m.keys for m in chosen if not m.model))
    model_metrics = [m for m in chosen if m.model]
    if any(m.name == "randomisation" for m in model_metrics) and rand_steps < 2:   # no rand_spearman_all
        raise XaiUsageError(f"--rand-steps {rand_steps}: the cascade needs at least 2 checkpoints, the top "
                            "layer alone and every layer; use 2 or more")
    records = resolve(inputs or [], images=False, records=True)
    masks = _GroundTruth(mask) if mask else None
    options = {"batch_size": batch_size, "steps": steps, "perturb_baseline": perturb_baseline,
               "rand_steps": rand_steps, "seed": seed, "road_percentiles": percentiles,
               "samples": samples, "subset_size": subset_size, "noise": noise,
               "sufficiency_threshold": sufficiency_threshold}
    evaluator = _ModelEvaluator(model, arch, classes, trust_pickle, device, model_metrics, options,
                                arch_args) if model and model_metrics else None
    stream = fmt == "jsonl" and output is None
    out = sys.stdout
    rows: list = []
    pending: list = []          # rows of the records of the current window, written when it closes
    window = window if any(m.combine for m in model_metrics) else 1
    seen = 0

    def close_window() -> None:
        metric_registry.settle(pending, model_metrics)
        for row in pending:
            if summary:
                row = {**row, "stat": None, "n": None}
            if stream:
                out.write(report.json_line(row) + "\n")
                out.flush()
            if summary or not stream:
                rows.append(row)
        pending.clear()

    matched = False
    for record in progress(records, records.count, "stats"):
        seen += 1
        gt = report.ground_truth(record, masks.get(record) if masks else None)
        targets = list(report.iter_map_targets(record, maps))
        found = [{k: v for k, v in report.map_row(mt, gt, top_k).items() if k in keep} for mt in targets]
        if evaluator is not None and targets:
            for row, extra in zip(found, evaluator.evaluate(targets)):
                row.update(extra)
        matched = matched or bool(found)
        pending.extend(found)
        if seen % window == 0:
            close_window()
        log.info("stats: %s done", record.id)
    close_window()
    if seen and not matched:
        raise XaiUsageError(f"no map matches --map {' '.join(maps or [])}; list the maps with "
                            "'xai stats FILE | jq -r .map | sort -u'")
    extra = report.summarise([r for r in rows if r.get("stat") is None]) if summary and fmt != "markdown" else []
    if stream:
        for row in extra:
            out.write(report.json_line(row) + "\n")
        out.flush()
        return
    if fmt == "markdown":
        text = report.markdown_table(rows, _table_keys(chosen, metrics), metric_registry.better)
    else:
        rows += extra
        text = {"jsonl": lambda: "".join(report.json_line(r) + "\n" for r in rows),
                "csv": lambda: report.csv_text(rows), "json": lambda: report.json_document(rows)}[fmt]()
    if output is None or output == "-":
        out.write(text)
        out.flush()
    else:
        _write_file(output, text)


def _key_lines() -> str:
    import textwrap

    lines = []
    for group in metric_registry.GROUPS:
        names = [m.name + ("*" if not m.default else "") + ": " + " ".join(m.keys)
                 for m in metric_registry.metrics().values() if m.group == group]
        if names:
            lines += textwrap.wrap(f"{group}: " + "; ".join(names), 88, initial_indent="  ",
                                   subsequent_indent="      ")
    return "\n".join(lines)


stats.__doc__ = HELP.replace("{keys}", _key_lines())


def _table_keys(chosen: list, asked) -> list[str]:
    """The markdown table's columns: the chosen metrics' keys, value statistics only when asked for."""
    return [k for m in chosen if asked or m.group != "statistics" for k in m.keys]


def _write_file(path: str, text: str) -> None:
    from pathlib import Path

    from xaicli.errors import XaiError
    from xaicli.io.atomic import atomic_open

    p = Path(path)
    try:
        with atomic_open(p) as f:
            f.write(text.encode())
    except OSError as exc:
        raise XaiError(f"{p}: cannot write ({exc.strerror}); choose a writable -o path") from None


class _GroundTruth(MaskSource):
    """`--mask FILE|DIR`: ground truth per record; a record without one gets null gt_ metrics."""

    def __init__(self, spec: str):
        super().__init__(spec, "--mask")

    def get(self, record):
        from xaicli.cli.state import log

        found = self.lookup(record.id)
        if found is None:
            log.warning("--mask %s: no mask named %s.*; its gt_ metrics are null", self.path, record.id)
            return None
        mask, path = found
        _check_size(mask, record, path)
        return mask


def _check_size(mask, record, path) -> None:
    from xaicli.errors import XaiError

    hw = None
    if record.image is not None:
        hw = tuple(record.image.shape[:2])
    else:
        for key in record.map_keys():
            hw = tuple(record.arrays[key].shape[-2:])
            break
    if hw is not None and tuple(mask.shape) != hw:
        raise XaiError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but record {record.id} is "
                       f"{hw[1]}x{hw[0]}; give a mask of the image's size")


class _ModelEvaluator:
    """The metrics that run the model: loaded once, at the first record (torch only from here)."""

    def __init__(self, spec, arch, classes, trust_pickle, device, metrics, options, arch_args=None):
        from xaicli.models.loader import parse_arch_args

        self.spec, self.arch, self.classes, self.trust_pickle = spec, arch, classes, trust_pickle
        self.arch_args = parse_arch_args(arch_args)       # checked before any record is read
        self.device, self.metrics, self.options = device, metrics, options
        self.adapter = self.session = None
        self.warned: set = set()
        self.state: dict = {}

    def _load(self, record):
        """Load with the record's own load options (size, mean, std), refusing records of other models."""
        from xaicli.cli.pipeline import ModelSession
        from xaicli.models.loader import LoadOptions

        opts = LoadOptions.from_meta(((record.meta.get("model") or {}).get("load")) or {})
        opts.arch = self.arch or opts.arch
        opts.arch_args = self.arch_args or opts.arch_args
        opts.classes = self.classes or opts.classes
        opts.trust_pickle = self.trust_pickle
        self.session = ModelSession(self.spec, opts, self.device)
        self.adapter = self.session.get(record)

    def evaluate(self, targets: list) -> list[dict]:
        """Model metrics for every map target of one record; maps sharing a target and region form one
        group, so each metric scores the unperturbed image once per group."""
        from xaicli.errors import XaiError
        from xaicli.explain.evaluation import Context

        record = targets[0].record
        if self.adapter is None:
            self._load(record)
        else:
            self.session.check(record)
        image = record.image
        if image is None:
            raise XaiError(f"record {record.id} holds no image (written with --no-image); the model metrics "
                           "need it: re-create the record without --no-image")
        ctx = Context(self.adapter, image, record.id, self.options, self.warned, self.state)
        out: list[dict] = [{} for _ in targets]
        groups: dict = {}
        for i, mt in enumerate(targets):
            region = None if mt.pred_mask is None else mt.pred_mask.tobytes()
            groups.setdefault((int(mt.target.get("index", mt.t)), region), []).append(i)
        for metric in self.metrics:
            for members in groups.values():
                for i, values in zip(members, metric.run(ctx, [targets[i] for i in members])):
                    out[i].update(values)
        return out
