// Test helper: parse logging commands with task-lib's own parser (taskcommand.commandFromString).
'use strict';
const path = require('path');
const { commandFromString } = require(path.join(__dirname, '..', 'DeployctlV1', 'node_modules', 'azure-pipelines-task-lib', 'taskcommand'));

function parseStream(lines) {
  const out = [];
  for (const line of lines) {
    const i = line.indexOf('##vso[');
    if (i >= 0) out.push(commandFromString(line.substring(i)));
  }
  return out;
}
module.exports = { parseStream };
