// One task run under azure-pipelines-task-lib's TaskMockRunner, configured by SCENARIO (JSON):
// { inputs, endpoint: {id, scheme, params, data}, variables, answers | null (null: real task lib) }.
'use strict';
const path = require('path');
const taskDir = path.join(__dirname, '..', 'DeployctlV1');
const { TaskMockRunner } = require(path.join(taskDir, 'node_modules', 'azure-pipelines-task-lib', 'mock-run'));

const s = JSON.parse(process.env.SCENARIO);
const tmr = new TaskMockRunner(path.join(taskDir, 'index.js'));
for (const [k, v] of Object.entries(s.inputs || {})) tmr.setInput(k, v);
if (s.endpoint) {
  const { id, scheme, params, data } = s.endpoint;
  process.env[`ENDPOINT_AUTH_SCHEME_${id}`] = scheme;
  process.env[`ENDPOINT_AUTH_${id}`] = JSON.stringify({ scheme, parameters: params });
  for (const [k, v] of Object.entries(params)) process.env[`ENDPOINT_AUTH_PARAMETER_${id}_${k.toUpperCase()}`] = v;
  for (const [k, v] of Object.entries(data || {})) process.env[`ENDPOINT_DATA_${id}_${k.toUpperCase()}`] = v;
}
for (const [k, v] of Object.entries(s.variables || {})) process.env[k.replace(/\./g, '_').toUpperCase()] = v;
if (s.answers) {
  tmr.setAnswers(s.answers);
  tmr.run();
} else {
  tmr.run(true); // the real task lib: real ToolRunner, real child process (a fake deployctl)
}
