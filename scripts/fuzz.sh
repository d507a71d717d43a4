#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/fuzz_targets: filter, patch, body, config), each for a given number of
# seconds (default 600), starting from a seed corpus made from the test fixtures and the example configs.
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]
#
# Needs the nightly toolchain (cargo fuzz builds with sanitizers); installs cargo-fuzz when missing.
# Findings land in fuzz/artifacts/<target>/; each run's statistics in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(filter patch body config)

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "scripts/fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Seeds: PATCH bodies, POST/PUT bodies and filters from the IdP fixtures; the example configurations.
python3 - <<'PY'
import json, os, glob, urllib.parse, hashlib
def put(target, data):
    d = f"fuzz/corpus/{target}"
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb").write(data)
for f in glob.glob("tests/fixtures/*.json"):
    for step in json.load(open(f))["steps"]:
        body = step.get("body")
        if body is not None:
            put("patch" if step["method"] == "PATCH" else "body", json.dumps(body))
        query = urllib.parse.urlparse(step["path"]).query
        for k, v in urllib.parse.parse_qsl(query):
            if k.lower() == "filter":
                put("filter", v)
for f in ["config.toml.example", "src/embedded.toml"]:
    put("config", open(f).read())
for p in ["emails[type eq \"work\"].value", "members[value eq \"2819c223\"]", "name.givenName",
          "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"]:
    put("filter", p)
PY

mkdir -p fuzz/logs
for t in "${targets[@]}"; do
    echo "== fuzzing $t for $secs s"
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        2>&1 | tee "fuzz/logs/$t.log" | grep -E '^(#[0-9]+.*(pulse|DONE)|==|stat::|SUMMARY|Done)' || true
    if ls "fuzz/artifacts/$t"/crash-* >/dev/null 2>&1; then
        echo "!! $t found crashes: fuzz/artifacts/$t/" >&2
    fi
done
