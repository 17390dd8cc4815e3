#!/usr/bin/env bash
# CI for the Azure DevOps extension: reproducible installs, the task's mock-runner tests, the .vsix.
#   bash azure-devops/ci.sh            (from the repo root or anywhere)
# Needs node >= 20 and npm, and the npm registry (nothing else: the mock runner's Node download is
# avoided, see tests/task.test.js). The task.json schema check runs with the Python tests
# (tests/azure_devops/test_extension.py).
set -euo pipefail
cd "$(dirname "$0")"
start=$SECONDS

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "azure-devops/ci.sh: node >= 20 needed (the task runs on the agent's Node20_1 handler), found $(node --version)" >&2
  exit 1
fi

echo "--- npm ci (task runtime: azure-pipelines-task-lib, production deps only: they ship in the .vsix)"
(cd DeployctlV1 && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
echo "--- npm ci (build tools: tfx-cli)"
npm ci --no-audit --no-fund --loglevel=error

echo "--- task tests (azure-pipelines-task-lib MockTestRunner, offline)"
node --test tests/

echo "--- package the extension (tfx extension create)"
rm -rf dist
npx --no-install tfx extension create --manifest-globs vss-extension.json --output-path dist/ --no-prompt
vsix=$(ls dist/*.vsix)
# The package must carry the task and its runtime dependency, not the tests or build tools.
python3 - "$vsix" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["DeployctlV1/task.json", "DeployctlV1/index.js", "DeployctlV1/node_modules/azure-pipelines-task-lib/task.js"]
missing = [n for n in need if n not in names]
stray = [n for n in names if n.startswith(("tests/", "node_modules/tfx-cli"))]
if missing or stray:
    sys.exit(f"bad vsix: missing {missing}, unexpected {stray[:5]}")
print(f"{sys.argv[1]}: {len(names)} files, task and runtime present")
PY
echo "azure-devops/ci.sh: ok in $((SECONDS - start)) s"
