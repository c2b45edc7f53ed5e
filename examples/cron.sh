#!/usr/bin/env bash
# Cron job over a growing folder of scans: each run explains only the scans that are new (or
# changed) since the last run, draws their figures and refreshes the statistics table.
#
#   examples/cron.sh [MODEL] [INBOX] [OUT]
#
#   MODEL   default builtin:shapes-seg
#   INBOX   the folder new scans arrive in (default: inbox)
#   OUT     default out/cron: OUT/records/ (one .npz per scan + manifest.jsonl), OUT/figures/,
#           OUT/stats.csv, OUT/report/index.html (the batch's page), OUT/cron.log
#   env     XAI_ARGS: extra `xai attribute` options, e.g. "--baseline blur --steps 64"
#
# crontab -e, every 10 minutes (cron has a bare PATH: name the environment's bin folder):
#   */10 * * * * PATH=/opt/xai/.venv/bin:/usr/bin:/bin /opt/xai/examples/cron.sh /models/unetpp /data/inbox /data/xai
#
# Why it is safe to run unattended:
# - --skip-existing keys each record by its id (the file stem) and the scan's sha256: a scan
#   is redone only when its record is missing or the file changed.
# - Records are written to a temp name and renamed, then their manifest line is appended, so
#   a run that is killed (reboot, kill -9, Ctrl-C) leaves no partial file; the next run
#   redoes exactly what is missing.
# - flock: a run that starts while the previous one is still busy exits at once.
# - --skip-unreadable: a scan that cannot be read (cut short, still being copied) is named in
#   cron.log and tried again next run; the other scans go on. An empty inbox is nothing to do.
set -euo pipefail
model=${1:-builtin:shapes-seg}
inbox=${2:-inbox}
out=${3:-out/cron}
mkdir -p "$out"
if command -v flock > /dev/null; then
    exec 9> "$out/.lock"
    if ! flock -n 9; then
        echo "$(date -Is) previous run still busy; nothing to do" >> "$out/cron.log"
        exit 0
    fi
fi
read -r -a extra <<< "${XAI_ARGS:-}"
before=$(cat "$out/records/manifest.jsonl" 2> /dev/null | wc -l || true)
if [ -z "$(find "$inbox" -maxdepth 1 -type f ! -name '.*' 2> /dev/null | head -n 1)" ]; then
    echo "$(date -Is) $inbox holds no scans yet; nothing to do" >> "$out/cron.log"
    exit 0
fi

# Warnings (a skipped scan, a large delta) and errors go to cron.log; progress bars only
# appear on a terminal. -q keeps render and stats to errors.
xai attribute -m "$model" "$inbox" -o "$out/records/" --skip-existing --skip-unreadable "${extra[@]}" \
    2>> "$out/cron.log"
if ls "$out/records" 2> /dev/null | grep -q '\.npz$'; then
    xai -q render "$out/records" -o "$out/figures" --skip-existing > /dev/null 2>> "$out/cron.log"
    xai -q stats "$out/records" --format csv -o "$out/stats.csv" 2>> "$out/cron.log"
fi

after=$(cat "$out/records/manifest.jsonl" 2> /dev/null | wc -l || true)
echo "$(date -Is) $((after - before)) new record(s); $(ls "$out/records" 2> /dev/null | grep -c '\.npz$' || true) in total" >> "$out/cron.log"

# Last, the page of the whole batch: only the new records' figures are drawn, and the page
# is replaced in one rename, so a reader never sees half of it.
if ls "$out/records" 2> /dev/null | grep -q '\.npz$'; then
    xai -q report "$out/records" -o "$out/report" --skip-existing --title "xai: $inbox" > /dev/null 2>> "$out/cron.log"
fi
