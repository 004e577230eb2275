#!/usr/bin/env bash
# Checks the Debian packages a make target uses, and installs the missing ones when it can.
#
#   scripts/system-packages.sh test    what `make test` uses
#
# As root it runs `apt-get update` and `apt-get install -y` for what is missing. Otherwise it
# prints one line naming the packages and the command that installs them, and fails, so that
# nothing runs without them.
set -euo pipefail

# command:package pairs, by target.
case "${1:-}" in
  # chromium for the browser tests, promtool (in prometheus) for the checks of the alert rules
  # and the Prometheus config, wrk for the benchmark smoke run, curl for the README's first
  # session as the fresh-clone test runs it, nginx for the check of the reverse proxy's config.
  test) needs=(chromium:chromium promtool:prometheus wrk:wrk curl:curl nginx:nginx) ;;
  *) echo "usage: $0 test" >&2; exit 2 ;;
esac

missing=()
for pair in "${needs[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
((${#missing[@]})) || exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "make $1 needs the Debian packages ${missing[*]}: install them with sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing the Debian packages make $1 uses: ${missing[*]}"
# apt's and dpkg's output is shown only if the install fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "installing ${missing[*]} failed" >&2
  exit 1
fi
