# Helpers sourced by the example scripts (bash). Needs `xai` on PATH.

# The Python interpreter that runs `xai` (for the demo-image generator and CSV tables).
xai_python() {
    local bin
    bin=$(command -v xai) || { echo "xai: not on PATH; activate the environment (. .venv/bin/activate)" >&2; return 1; }
    local dir
    dir=$(dirname "$bin")
    if [[ -x $dir/python ]]; then echo "$dir/python"; else echo python3; fi
}

# demo_images DIR TASK COUNT: synthetic demo images (segmentation: 96x96 gray blobs with
# masks/ beside them; classification: 64x64 RGB objects whose colour is the class).
demo_images() {
    "$(xai_python)" -m xaicli.models.builtin.shapes "$1" --task "$2" --count "$3" >/dev/null
}

# table CSV [COLUMN=VALUE ...] COLUMN...: pick columns of an `xai stats --format csv` table as
# tab-separated text with a header; COLUMN=VALUE keeps the rows where COLUMN equals VALUE
# (stat= keeps the per-record rows, stat=mean the means of --summary).
table() {
    "$(xai_python)" - "$@" <<'PY'
import csv, sys
path, args = sys.argv[1], sys.argv[2:]
keep = [a.split("=", 1) for a in args if "=" in a]
cols = [a for a in args if "=" not in a]
with open(path, newline="") as f:
    rows = [r for r in csv.DictReader(f) if all(r.get(k, "") == v for k, v in keep)]
print("\t".join(cols))
for r in rows:
    print("\t".join(r.get(c, "") for c in cols))
PY
}
