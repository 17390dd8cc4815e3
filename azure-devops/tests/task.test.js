// Deployctl@1 under azure-pipelines-task-lib's MockTestRunner, offline.
//
// MockTestRunner runs each scenario with a Node it downloads from nodejs.org into
// $HOME/azure-pipelines-task-lib/_download/node<major>. There is no network here (nor in CI) but
// there is a Node 20: we point HOME at a temp folder and place this Node where the runner looks,
// with the marker file it checks, so nothing is downloaded.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'deployctl-task-test-'));
process.env.HOME = home;
const nodeDir = path.join(home, 'azure-pipelines-task-lib', '_download', 'node20');
fs.mkdirSync(path.join(nodeDir, 'node-v20.13.1-linux-x64', 'bin'), { recursive: true });
fs.symlinkSync(process.execPath, path.join(nodeDir, 'node-v20.13.1-linux-x64', 'bin', 'node'));
fs.writeFileSync(nodeDir + '.completed', '');

const taskDir = path.join(__dirname, '..', 'DeployctlV1');
const { MockTestRunner } = require(path.join(taskDir, 'node_modules', 'azure-pipelines-task-lib', 'mock-test'));
const { parseStream } = require('./vso');

const manifest = path.join(home, 'deployctl.yaml');
fs.writeFileSync(manifest, 'name: x\n');
const fakeBin = path.join(home, 'bin');
fs.mkdirSync(fakeBin);
fs.copyFileSync(path.join(__dirname, 'fake-deployctl'), path.join(fakeBin, 'deployctl'));
fs.chmodSync(path.join(fakeBin, 'deployctl'), 0o755);

const SPN = {
  id: 'conn1', scheme: 'ServicePrincipal',
  params: { serviceprincipalid: 'app-id', serviceprincipalkey: 'spn-secret-value', tenantid: 'tenant-id', authenticationType: 'spnKey' },
  data: { subscriptionid: 'sub-id' },
};

async function runScenario(scenario, env = {}) {
  const saved = { ...process.env };
  Object.assign(process.env, { SCENARIO: JSON.stringify(scenario), AGENT_TEMPDIRECTORY: home }, env);
  try {
    const tr = new MockTestRunner(path.join(__dirname, 'scenario.js'), path.join(taskDir, 'task.json'));
    await tr.runAsync();
    tr.commands = parseStream(tr.stdout.split(/\r?\n/));
    return tr;
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

test('inputs map to one deployctl command line (mocked exec)', async () => {
  const cmd = `/fake/deployctl plan ${manifest} --target dev --target prod --target eu --out out/plan.json ` +
    '--detailed-exitcode --var IMAGE=1 --var TAG=a=b --ci azure-devops';
  const tr = await runScenario({
    inputs: { command: 'plan', manifest, planFile: 'out/plan.json', targets: 'dev, prod\neu', variables: 'IMAGE=1\nTAG=a=b',
      azureSubscription: 'conn1', deployctlVersion: '' },
    endpoint: SPN,
    answers: { which: { deployctl: '/fake/deployctl' }, checkPath: { [manifest]: true, '/fake/deployctl': true },
      exec: { [cmd]: { code: 3, stdout: '##vso[task.setvariable variable=dev_scoring_uri;isoutput=true;]https://x/score' } } },
  });
  assert.ok(tr.ran(cmd), tr.stdout);
  assert.ok(tr.succeeded, 'changes pending (exit 3) is not a failure');
  const vars = tr.commands.filter((c) => c.command === 'task.setvariable');
  assert.deepStrictEqual(vars.map((c) => [c.properties.variable, c.message]),
    [['dev_scoring_uri', 'https://x/score'], ['hasChanges', 'true']]);
  assert.strictEqual(vars[1].properties.isOutput, 'true');
  assert.ok(tr.commands.some((c) => c.command === 'task.setsecret' && c.message === 'spn-secret-value'));
});

test('invoke: request body, variables and extra arguments', async () => {
  const cmd = `/fake/deployctl invoke ${manifest} --target dev --var STAGE=smoke --data {"data": [[1, 2]]} --timeout 30 --ci azure-devops`;
  const tr = await runScenario({
    inputs: { command: 'invoke', manifest, targets: 'dev', variables: 'STAGE=smoke', data: '{"data": [[1, 2]]}',
      arguments: '--timeout 30', azureSubscription: 'conn1', deployctlVersion: '' },
    endpoint: SPN,
    answers: { which: { deployctl: '/fake/deployctl' }, checkPath: { [manifest]: true },
      exec: { [cmd]: { code: 1, stdout: '' } } },
  });
  assert.ok(tr.ran(cmd), tr.stdout);
  assert.ok(tr.failed, 'a failed smoke test fails the task');
  assert.match(tr.stdout, /deployctl invoke exited with code 1/);
});

test('apply of a saved plan ignores the manifest and targets', async () => {
  const cmd = '/fake/deployctl apply drop/plan.json --yes --ci azure-devops';
  const tr = await runScenario({
    inputs: { command: 'apply', planFile: 'drop/plan.json', targets: 'dev', azureSubscription: 'conn1', deployctlVersion: '' },
    endpoint: SPN,
    answers: { which: { deployctl: '/fake/deployctl' }, exec: { [cmd]: { code: 0, stdout: '' } } },
  });
  assert.ok(tr.ran(cmd), tr.stdout);
  assert.ok(tr.succeeded);
});

test('service principal -> AZURE_* variables for azure-identity (real task lib, real process)', async () => {
  const tr = await runScenario({
    inputs: { command: 'validate', manifest, azureSubscription: 'conn1', deployctlVersion: '' },
    endpoint: SPN,
  }, { PATH: `${fakeBin}${path.delimiter}${process.env.PATH}`, EXPECT_SECRET: 'spn-secret-value' });
  assert.ok(tr.succeeded, tr.stdout + tr.stderr);
  const out = tr.stdout + tr.stderr;
  assert.match(out, /ARGV \["validate","[^"]+deployctl.yaml","--ci","azure-devops"\]/);
  assert.match(out, /ENV AZURE_CLIENT_ID=app-id/);
  assert.match(out, /ENV AZURE_TENANT_ID=tenant-id/);
  assert.match(out, /ENV AZURE_SUBSCRIPTION_ID=sub-id/);
  assert.match(out, /ENV AZURE_CLIENT_SECRET=<the secret>/);
  assert.match(out, /ENV AZURE_FEDERATED_TOKEN_FILE=<unset>/);
  assert.match(out, /LEAKED \n/, 'the raw endpoint variables are not passed on');
  // deployctl writes its logging commands to stderr; task-lib's ToolRunner forwards a child's stderr
  // to the task's stdout (unless failOnStdErr), where the agent (and this runner) read them
  assert.match(tr.stdout, /##vso\[task.setvariable variable=dev_scoring_uri;isoutput=true;\]https:\/\/dev.example\/score/);
});

test('certificate service principal -> a private PEM file for azure-identity, removed after the run', async () => {
  const pem = '-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n' +
    '-----BEGIN CERTIFICATE-----\nMIIC8DCCAdigAwIBAgIQ\n-----END CERTIFICATE-----\n';
  const tr = await runScenario({
    inputs: { command: 'plan', manifest, azureSubscription: 'conn-cert', deployctlVersion: '' },
    endpoint: { id: 'conn-cert', scheme: 'ServicePrincipal',
      params: { serviceprincipalid: 'cert-app', tenantid: 'cert-tenant', authenticationType: 'spnCertificate',
        servicePrincipalCertificate: pem },
      data: { subscriptionid: 'cert-sub' } },
  }, { PATH: `${fakeBin}${path.delimiter}${process.env.PATH}`, EXPECT_PEM: pem });
  assert.ok(tr.succeeded, tr.stdout + tr.stderr);
  assert.match(tr.stdout, /ENV AZURE_CLIENT_ID=cert-app/);
  assert.match(tr.stdout, /ENV AZURE_CLIENT_SECRET=<unset>/);
  const cert = tr.stdout.match(/CERT (\S+) (.+) mode=(\d+)/);
  assert.ok(cert, tr.stdout);
  assert.strictEqual(cert[2], '<the pem>');
  assert.strictEqual(cert[3], '600');
  assert.ok(!fs.existsSync(cert[1]), 'the certificate file is removed once deployctl has exited');
  // masked before anything could print it, line by line (the agent refuses multi-line secrets);
  // the PEM's BEGIN/END markers are not secret
  const masked = tr.commands.filter((c) => c.command === 'task.setsecret').map((c) => c.message);
  assert.deepStrictEqual(masked, ['MIIEvQIBADANBgkqhkiG9w0BAQEFAASC', 'MIIC8DCCAdigAwIBAgIQ']);
});

test('workload identity federation -> ID token file for azure-identity (real task lib, local OIDC endpoint)', async () => {
  const { spawn } = require('child_process');
  const server = spawn(process.execPath, [path.join(__dirname, 'oidc-server.js')]);
  try {
    const port = await new Promise((resolve, reject) => {
      server.stdout.once('data', (d) => resolve(String(d).trim()));
      server.once('exit', () => reject(new Error('OIDC server exited')));
    });
    const tr = await runScenario({
      inputs: { command: 'plan', manifest, azureSubscription: 'conn-wif', deployctlVersion: '' },
      endpoint: { id: 'conn-wif', scheme: 'WorkloadIdentityFederation',
        params: { serviceprincipalid: 'wif-app', tenantid: 'wif-tenant' }, data: { subscriptionid: 'wif-sub' } },
      variables: { 'System.OidcRequestUri': `http://127.0.0.1:${port}/oidctoken` },
    }, {
      PATH: `${fakeBin}${path.delimiter}${process.env.PATH}`,
      ENDPOINT_AUTH_PARAMETER_SYSTEMVSSCONNECTION_ACCESSTOKEN: 'job-access-token',
    });
    assert.ok(tr.succeeded, tr.stdout);
    assert.match(tr.stdout, /ENV AZURE_CLIENT_ID=wif-app/);
    assert.match(tr.stdout, /ENV AZURE_SUBSCRIPTION_ID=wif-sub/);
    assert.match(tr.stdout, /ENV AZURE_CLIENT_SECRET=<unset>/);
    assert.match(tr.stdout, /TOKEN eyJ.federated.token mode=600/);
    assert.ok(tr.commands.some((c) => c.command === 'task.setsecret' && c.message === 'eyJ.federated.token'));
  } finally {
    server.kill();
  }
});

test('missing service connection: Failed with a clear message, deployctl not run', async () => {
  const tr = await runScenario({
    inputs: { command: 'apply', manifest, azureSubscription: '', deployctlVersion: '' },
    answers: { which: { deployctl: '/fake/deployctl' }, checkPath: { [manifest]: true } },
  });
  assert.ok(tr.failed);
  assert.strictEqual(tr.invokedToolCount, 0);
  assert.match(tr.stdout, /No Azure Resource Manager service connection/);
});

test('unauthorized service connection: Failed, names the connection', async () => {
  const tr = await runScenario({
    inputs: { command: 'plan', manifest, azureSubscription: 'not-shared', deployctlVersion: '' },
    answers: { which: { deployctl: '/fake/deployctl' }, checkPath: { [manifest]: true } },
  });
  assert.ok(tr.failed);
  assert.match(tr.stdout, /Service connection 'not-shared' was not found, or this pipeline is not authorized/);
});

test('failing apply -> task Failed (real process exits 1)', async () => {
  const tr = await runScenario({
    inputs: { command: 'apply', manifest, azureSubscription: 'conn1', deployctlVersion: '' },
    endpoint: SPN,
  }, { PATH: `${fakeBin}${path.delimiter}${process.env.PATH}`, FAKE_DEPLOYCTL_EXIT: '1' });
  assert.ok(tr.failed, tr.stdout);
  assert.match(tr.stdout, /deployctl apply exited with code 1/);
  const results = tr.commands.filter((c) => c.command === 'task.complete').map((c) => c.properties.result);
  assert.ok(results.length > 0 && results.every((r) => r === 'Failed'), JSON.stringify(results));
});
