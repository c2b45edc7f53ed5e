"""The method registry: what each attribution and CAM method declares, found by discovery.

A method is one module of a family package (`xaicli/explain/attribution/`,
`xaicli/explain/cams/`) holding one subclass of the family's base class with a `name`:
defining the class registers it (`__init_subclass__`), and `methods(family)` imports
every module of the package (pkgutil; names starting with `_` are helpers, not
methods). Nothing else lists the methods: the CLI's `--method` choices, help and
method options, the man pages, completions, the README's method tables and
`stats --randomize` all read them from here.

This module and every method module import no torch at top level: `xai --help` and
shell completion build the `--method` choices and options from the registry.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

from xaicli.errors import XaiError, XaiUsageError

PACKAGES = {"attribution": "xaicli.explain.attribution", "cam": "xaicli.explain.cams"}
ENGINES = {"attribution": "xaicli.explain.attribute", "cam": "xaicli.explain.cam"}   # each has explain/redo
PREFIXES = {"attribution": "attr/", "cam": "cam/"}                                       # record keys of its maps
TASKS = ("classification", "segmentation")


@dataclass(frozen=True)
class Option:
    """One command-line option, `--name-with-dashes` unless `flags` says otherwise.

    Its value reaches the method as `options[name]`, is stored in the meta of every map
    the method makes (so `stats --randomize` can redo the map) and is checked by
    `check` (raise XaiUsageError naming the fix) before any model loads.
    """

    name: str
    type: type
    default: Any
    help: str
    flags: tuple[str, ...] = ()              # e.g. ("--steps", "-n") or ("--exact/--screen",)
    multiple: bool = False                   # repeatable: a list of `type`
    min: float | None = None
    choices: Callable[[], Sequence[str]] | None = None   # shell completion of the value
    show_default: bool = True
    check: Callable[[Any], None] | None = None

    @property
    def decls(self) -> tuple[str, ...]:
        return self.flags or ("--" + self.name.replace("_", "-"),)


class Method:
    """A method's declaration. Subclasses set the class attributes; the family base
    classes (AttributionMethod, CamMethod) add the computation contract."""

    family: ClassVar[str] = ""
    name: ClassVar[str] = ""                      # the --method value
    aliases: ClassVar[tuple[str, ...]] = ()       # other accepted spellings
    summary: ClassVar[str] = ""                   # what it computes, one line (help, README)
    reference: ClassVar[str] = ""                 # the implementation it is checked against ...
    reference_package: ClassVar[str] = ""         # ... and the package holding it
    checked: ClassVar[str] = ""                   # how closely (README table)
    notes: ClassVar[str] = ""                     # how we compute it (README table)
    options: ClassVar[tuple[Option, ...]] = ()    # its own options (shared ones: reuse the object)
    tasks: ClassVar[tuple[str, ...]] = TASKS      # models it applies to
    in_all: ClassVar[bool] = True                 # part of `--method all`
    default: ClassVar[bool] = False               # what runs without --method
    gradients: ClassVar[bool] = True              # needs d score / d something
    token_layers: ClassVar[bool] = False          # ViT layers only (patch tokens of transformer blocks)
    order: ClassVar[int] = 1000                   # place in listings (then by name)

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        if cls.__dict__.get("name"):
            register(cls())

    @property
    def key(self) -> str:
        """The name in records: `attr/<key>/...`, `cam/<key>/...`, meta's `method`."""
        return self.name

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.name, self.key, *self.aliases)

    def fits(self, task: str | None) -> bool:
        return task is None or task in self.tasks

    def unfit(self, adapter, image) -> str | None:
        """Why this method cannot explain `adapter`'s model (None: it can), e.g. no ReLU for guided
        backprop's rule to change. `image` is the run's first image (a probe forward may need it)."""
        return None

    def option_meta(self, options: dict[str, Any]) -> dict[str, Any]:
        """Its own options as stored in a map's meta."""
        return {o.name: options[o.name] for o in self.options}


_REGISTRY: dict[str, dict[str, Method]] = {}
_LOADED: set[str] = set()


def register(method: Method) -> None:
    """Add a declaration; a name or alias taken by another method of the family is a bug."""
    family = _REGISTRY.setdefault(method.family, {})
    taken = {s: m.name for m in family.values() if m.name != method.name for s in m.spellings}
    clash = [s for s in method.spellings if s in taken]
    if clash or method.family not in PACKAGES:
        raise RuntimeError(f"method {method.name!r}: family {method.family!r}, spelling {clash[:1]} of "
                           f"{[taken[c] for c in clash[:1]]} already registered")
    family[method.name] = method


def methods(family: str) -> dict[str, Method]:
    """Every method of `family` by name, in listing order (imports the package's modules once)."""
    if family not in _LOADED:
        package = importlib.import_module(PACKAGES[family])
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_") and not info.ispkg:
                importlib.import_module(f"{package.__name__}.{info.name}")
        _LOADED.add(family)
    found = _REGISTRY.get(family, {})
    return {m.name: m for m in sorted(found.values(), key=lambda m: (m.order, m.name))}


def family_options(family: str) -> tuple[Option, ...]:
    """Options of the family's engine (the package's OPTIONS), shared by its methods."""
    return tuple(getattr(importlib.import_module(PACKAGES[family]), "OPTIONS", ()))


def options(family: str) -> list[Option]:
    """The family's options and then every method's, each once; two declarations of one name are a bug."""
    out: dict[str, Option] = {}
    for opt in (*family_options(family), *(o for m in methods(family).values() for o in m.options)):
        if out.setdefault(opt.name, opt) is not opt:
            raise RuntimeError(f"option {opt.name!r} is declared twice in {family}: declare it once and reuse it")
    return list(out.values())


def option_defaults(family: str) -> dict[str, Any]:
    return {o.name: o.default for o in options(family)}


def check_options(family: str, values: dict[str, Any]) -> None:
    for o in options(family):
        if o.check is not None and values.get(o.name) is not None:
            o.check(values[o.name])


def lookup(family: str, name: str) -> Method | None:
    """The method a --method value names: its name, record key or an alias, any case,
    `_` read as `-` or dropped (kpca_cam, gradcam_elementwise, integrated_gradients)."""
    key = name.strip().lower()
    table = {s: m for m in methods(family).values() for s in m.spellings}
    for cand in (key, key.replace("_", "-"), key.replace("_", "")):
        if cand in table:
            return table[cand]
    return None


def resolve(family: str, names: Sequence[str] | None, task: str | None = None, layers: int = 1,
            tokens: bool | None = None) -> list[Method]:
    """The methods `--method` values ask for, each once, in order; comma-separated values
    and `all` (every method of `in_all` that fits the task, the number of distinct layers
    and, when `tokens` says whether every layer is a ViT token layer, the kind of layer)
    accepted. Unknown or empty names, a method for another task and a ViT-only method on
    other layers are usage errors."""
    known = methods(family)
    listed = ", ".join(known)
    default = [m.name for m in known.values() if m.default]
    out: list[Method] = []
    for raw in names or default:
        for part in str(raw).split(","):
            key = part.strip().lower()
            if not key:
                raise XaiUsageError(f"--method {raw!r} has an empty method name; use one of {listed} or all, "
                                    "comma-separated without empty entries")
            if key == "all":
                picked = [m for m in known.values() if m.in_all and m.fits(task) and layers >= min_layers(m)
                          and not (m.token_layers and tokens is False)]
            else:
                m = lookup(family, key)
                if m is None:
                    raise XaiUsageError(f"unknown --method {part.strip()!r}; use one of {listed} or all")
                if not m.fits(task):
                    raise XaiUsageError(f"--method {m.name} applies to {' and '.join(m.tasks)} models only, "
                                        f"not to this {task} model")
                if m.token_layers and tokens is False:
                    raise XaiUsageError(f"--method {m.name} applies to ViT layers only (transformer blocks over patch "
                                        "tokens), and this model's --layer is not one; use gradcam or recipro-cam")
                picked = [m]
            out.extend(p for p in picked if p not in out)
    return out


def applicable(family: str, picked: Sequence[Method], names: Sequence[str] | None, adapter, image) -> list[Method]:
    """The methods of `picked` that can explain the model: one named in `names` that cannot is an
    error naming why; one that `all` brought is left out (the model is not of its kind), and said so."""
    named = {m.name for raw in names or [] for part in str(raw).split(",")
             if part.strip().lower() != "all" and (m := lookup(family, part)) is not None}
    out = []
    for m in picked:
        why = m.unfit(adapter, image)
        if why is None:
            out.append(m)
        elif m.name in named:
            raise XaiError(f"--method {m.name}: {why}")
        else:
            logging.getLogger("xai").info("--method all: %s left out: %s", m.name, why)
    return out


def min_layers(method: Method) -> int:
    return int(getattr(method, "min_layers", 1))


def family_of(map_key: str, info: dict | None = None) -> str | None:
    """The family whose engine made a map: its meta's `family` (a CAM method's per-channel map is
    stored under attr/), else its key's prefix."""
    named = (info or {}).get("family")
    return named if named in PACKAGES else next((f for f, p in PREFIXES.items() if map_key.startswith(p)), None)


def by_key(family: str, key: str) -> Method | None:
    """The method that wrote a map whose meta says `method: key` (None: not registered)."""
    return next((m for m in methods(family).values() if m.key == key), None)
