#!/usr/bin/env bash
# npm test: installs or starts what the tests need (node modules, PostgreSQL, the temporal CLI), compiles,
# then runs unit, workflow and integration tests against the real PostgreSQL and Temporal dev server.
source "$(dirname "$0")/env.sh"
ensure_node_modules
ensure_postgres
ensure_temporal_bin
ensure_chromium
ensure_build
cd "$PARTFLOW_ROOT"
# the formatter and the linter first: a failure here is a finding like any failed test
npm run --silent lint
mkdir -p test-artifacts
set +e
# no arguments: unit, workflow and integration tests; the fault suite is `npm run test:faults`
if [ $# -eq 0 ]; then set -- --selectProjects unit workflow integration; fi
npx jest --runInBand --forceExit --json --outputFile=test-artifacts/jest.json "$@"
rc=$?
set -e
node -e '
  const r = require("./test-artifacts/jest.json");
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' || true
exit $rc
