"""Option definitions shared by the commands, so each flag means the same everywhere."""

from __future__ import annotations

from typing import List, Optional

import typer
from typing_extensions import Annotated

from xaicli.models import formats

Inputs = Annotated[
    Optional[List[str]],
    typer.Argument(help="Images, records (.npz), tar streams, directories, or '-' for stdin "
                        "(the default when stdin is a pipe).", show_default=False),
]
RecordInputs = Annotated[
    Optional[List[str]],
    typer.Argument(help="Records (.npz), tar streams, directories of records, or '-' for stdin "
                        "(the default when stdin is a pipe).", show_default=False),
]
Output = Annotated[
    Optional[str],
    typer.Option("--output", "-o", help="Where records go: '-' (stdout, the default) or FILE.tar for a tar "
                                        "stream; DIR/ for one .npz per record plus manifest.jsonl.",
                 show_default=False),
]
Model = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help=formats.model_help(), show_default=False),
]
Arch = Annotated[
    Optional[str],
    typer.Option("--arch", help=formats.arch_help(), show_default=False),
]
ArchArgs = Annotated[
    Optional[str],
    typer.Option("--arch-args", help="Keyword arguments of --arch's constructor, a JSON object, e.g. "
                                     "'{\"in_channels\": 1, \"out_channels\": 2, \"channels\": [16, 32, 64], "
                                     "\"strides\": [2, 2]}' (monai:UNet); checked against its signature.",
                 show_default=False),
]
Classes = Annotated[
    Optional[int],
    typer.Option("--classes", min=1, help="Output classes for --arch (default: read from the state dict).",
                 show_default=False),
]
Labels = Annotated[
    Optional[str],
    typer.Option("--labels", help="Comma-separated class names, overriding the model's.", show_default=False),
]
Device = Annotated[
    str,
    typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps."),
]
BatchSize = Annotated[
    Optional[int],
    typer.Option("--batch-size", "-b", min=1, help="Images (predict) or passes (attribute, cam) per "
                                                   "forward; default: chosen from free memory.",
                 show_default=False),
]
Size = Annotated[
    Optional[str],
    typer.Option("--size", help="Model input size, N or HxW (smp: multiples of 32). Default: the model's, "
                                "or the image size rounded to 32 for smp.", show_default=False),
]
Mean = Annotated[
    Optional[str],
    typer.Option("--mean", help="Per-channel normalisation mean, e.g. 0.485,0.456,0.406 (default: the "
                                "model's own preprocessing's, ImageNet's for smp, 0 for MONAI).", show_default=False),
]
Std = Annotated[
    Optional[str],
    typer.Option("--std", help="Per-channel normalisation std, e.g. 0.229,0.224,0.225.", show_default=False),
]
Fit = Annotated[
    Optional[str],
    typer.Option("--fit", help="How the image becomes the model's input: processor (the default for Hugging Face, "
                               "timm and torchvision models: their own preprocessing, with its resize and centre crop; "
                               "pixels outside the crop get zero attribution) or squash (the whole image resized to the "
                               "model size: --size, else the processor's output size; smp models always squash).",
                 show_default=False, autocompletion=lambda: ["processor", "squash"]),
]
TrustPickle = Annotated[
    bool,
    typer.Option("--trust-pickle", help="Allow loading a fully pickled model. Loading a pickle runs code "
                                        "from the file: only for files you trust."),
]
SkipExisting = Annotated[
    bool,
    typer.Option("--skip-existing", help="Skip inputs whose output is already in -o: a record in -o DIR/ made by "
                                         "this command (predict --json: a line in -o FILE; render: the figure) with "
                                         "the same record id and source sha256. A rerun or a cron job then does only "
                                         "new or changed inputs."),
]
SkipUnreadable = Annotated[
    bool,
    typer.Option("--skip-unreadable", help="Skip an image that cannot be read (corrupt, cut short, still being "
                                           "copied, unreadable) with a warning on stderr instead of failing the "
                                           "run; with --skip-existing a later run tries it again."),
]
MaxPixels = Annotated[
    int,
    typer.Option("--max-pixels", min=1, help="Refuse images with more pixels than this."),
]
NoImage = Annotated[
    bool,
    typer.Option("--no-image", help="Do not store the image in the record (smaller records)."),
]
Shard = Annotated[
    Optional[str],
    typer.Option("--shard", help="Process only shard K of N (K/N, 0-based), split by a stable hash of the record "
                                 "id (sha1 mod N): N tasks with K = 0..N-1 cover every input exactly once. "
                                 "'slurm' reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT "
                                 "(sbatch --array=0-3 gives 0/4 ... 3/4); 'slurm/N' takes K from "
                                 "SLURM_ARRAY_TASK_ID, so a task resubmitted alone keeps its shard.",
                 show_default=False, autocompletion=lambda: ["slurm", "0/2", "1/2", "0/4"]),
]
Targets = Annotated[
    Optional[List[str]],
    typer.Option("--target", "-t", help="Classifier: top1 (default), topK, all, a class index or label (repeatable). "
                                        "Segmenter: predicted (default: logits summed over the predicted mask of "
                                        "each predicted class), all (every class's predicted region), all-pixels, "
                                        "or mask (the --target-mask region).", show_default=False),
]
TargetMask = Annotated[
    Optional[str],
    typer.Option("--target-mask", help="Segmenter: explain the logits summed over this region (a mask image or .npy, "
                                       "non-zero inside, the image's size; or a folder of masks named by record id).",
                 show_default=False),
]
SegClasses = Annotated[
    Optional[List[int]],
    typer.Option("--class", help="Segmenter class to explain (repeatable; default: the predicted classes).",
                 show_default=False),
]
Threshold = Annotated[
    float,
    typer.Option("--threshold", min=0.0, max=1.0, help="One-class segmenters: foreground probability cut for the "
                                                       "predicted mask (where this command makes the prediction)."),
]
