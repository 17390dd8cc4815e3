// Deployctl@1: a thin shim. It installs deployctl (pinned, with pip) when missing, turns the Azure
// Resource Manager service connection into the environment variables azure-identity reads, runs
// `deployctl <command> ... --ci azure-devops`, and relays its exit code. deployctl itself writes
// the logging commands (annotations, secrets, output variables, summary, task.complete); they pass
// through this process's output unchanged. Nothing else lives here: all logic is in Python.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const tl = require('azure-pipelines-task-lib/task');

const COMMANDS = ['validate', 'plan', 'apply', 'destroy', 'invoke'];

// Multi-line inputs: one item per line (commas also separate targets).
function lines(name, splitCommas) {
  const raw = tl.getInput(name, false) || '';
  return raw.split(splitCommas ? /[\r\n,]+/ : /\r?\n/).map((s) => s.trim()).filter((s) => s && !s.startsWith('#'));
}

// The deployctl command line for the task's inputs.
function deployctlArgs() {
  const command = tl.getInput('command', true);
  if (!COMMANDS.includes(command)) throw new Error(`command must be one of ${COMMANDS.join(', ')}, not '${command}'`);
  const planFile = tl.getInput('planFile', false);
  const args = [command];
  if (command === 'apply' && planFile) {
    args.push(planFile); // a saved plan: exactly what was reviewed, refused if the world changed
  } else {
    args.push(tl.getPathInput('manifest', true, true));
    for (const t of lines('targets', true)) args.push('--target', t);
    if (command === 'plan' && planFile) args.push('--out', planFile);
    if (command === 'plan') args.push('--detailed-exitcode'); // exit 3: changes pending -> hasChanges
  }
  for (const v of lines('variables', false)) args.push('--var', v);
  if (command === 'apply' || command === 'destroy') args.push('--yes');
  if (command === 'invoke') {
    const data = tl.getInput('data', false);
    const file = tl.getInput('dataFile', false);
    if (data) args.push('--data', data);
    if (file) args.push('--file', file);
  }
  const extra = tl.getInput('arguments', false);
  if (extra) args.push(...extra.split(/\s+/).filter(Boolean));
  args.push('--ci', 'azure-devops');
  return args;
}

// Service connection -> AZURE_* for azure-identity's DefaultAzureCredential.
async function azureEnv(connection) {
  if (!connection) {
    throw new Error('No Azure Resource Manager service connection: set the azureSubscription input ' +
      'to a service connection this pipeline may use.');
  }
  const scheme = tl.getEndpointAuthorizationScheme(connection, true);
  if (!scheme) {
    throw new Error(`Service connection '${connection}' was not found, or this pipeline is not authorized to use it.`);
  }
  const param = (name) => tl.getEndpointAuthorizationParameter(connection, name, true);
  const env = {
    AZURE_CLIENT_ID: param('serviceprincipalid'),
    AZURE_TENANT_ID: param('tenantid'),
    AZURE_SUBSCRIPTION_ID: tl.getEndpointDataParameter(connection, 'subscriptionid', true) || '',
  };
  if (scheme.toLowerCase() === 'serviceprincipal') {
    if ((param('authenticationType') || 'spnKey') === 'spnCertificate') {
      const pem = param('servicePrincipalCertificate') || '';
      // setSecret refuses multi-line values (the agent masks line by line): mask each key line
      for (const line of pem.split(/\r?\n/)) {
        if (line.trim() && !line.startsWith('-----')) tl.setSecret(line.trim());
      }
      env.AZURE_CLIENT_CERTIFICATE_PATH = writePrivate('deployctl-spn.pem', pem);
    } else {
      const key = param('serviceprincipalkey');
      tl.setSecret(key);
      env.AZURE_CLIENT_SECRET = key;
    }
  } else if (scheme.toLowerCase() === 'workloadidentityfederation') {
    const token = await federatedToken(connection);
    tl.setSecret(token);
    env.AZURE_FEDERATED_TOKEN_FILE = writePrivate('deployctl-oidc.jwt', token);
  } else {
    throw new Error(`Service connection '${connection}' uses '${scheme}'; Deployctl@1 supports service ` +
      'principal (secret or certificate) and workload identity federation.');
  }
  if (!env.AZURE_CLIENT_ID || !env.AZURE_TENANT_ID) {
    throw new Error(`Service connection '${connection}' has no service principal id or tenant id.`);
  }
  return env;
}

// Workload identity federation: ask Azure DevOps for an ID token for this service connection.
async function federatedToken(connection) {
  const uri = tl.getVariable('System.OidcRequestUri');
  const access = tl.getEndpointAuthorizationParameter('SystemVssConnection', 'AccessToken', false);
  if (!uri || !access) throw new Error('Workload identity federation needs System.OidcRequestUri and the job access token.');
  const url = `${uri}?api-version=7.1&serviceConnectionId=${encodeURIComponent(connection)}`;
  const res = await fetch(url, { method: 'POST', headers: { Authorization: `Bearer ${access}`, 'Content-Type': 'application/json' } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !body.oidcToken) throw new Error(`Could not get an ID token for '${connection}' (HTTP ${res.status}).`);
  return body.oidcToken;
}

// Credential files (a certificate, an ID token) live only while deployctl runs: removed after it
// exits, whatever happened, rather than left for the agent's end-of-job cleanup.
const privateFiles = [];

function writePrivate(name, text) {
  const dir = tl.getVariable('Agent.TempDirectory') || os.tmpdir();
  const file = path.join(dir, `${process.pid}-${name}`);
  fs.writeFileSync(file, text, { mode: 0o600 });
  privateFiles.push(file);
  return file;
}

function removePrivateFiles() {
  for (const file of privateFiles.splice(0)) {
    try { fs.unlinkSync(file); } catch (e) { /* already gone */ }
  }
}

// deployctl on PATH when no version is pinned; otherwise a venv per version under the tools folder.
async function deployctlPath() {
  const version = (tl.getInput('deployctlVersion', false) || '').trim();
  const pkg = tl.getInput('deployctlPackage', false) || 'deployctl[azure]';
  if (!version) {
    const found = tl.which('deployctl', false);
    if (found) return found;
  }
  const root = tl.getVariable('Agent.ToolsDirectory') || tl.getVariable('Agent.TempDirectory') || os.tmpdir();
  const venv = path.join(root, 'deployctl', version || 'latest');
  const bin = path.join(venv, process.platform === 'win32' ? 'Scripts' : 'bin');
  const exe = path.join(bin, process.platform === 'win32' ? 'deployctl.exe' : 'deployctl');
  if (fs.existsSync(exe)) return exe;
  const python = tl.which('python3', false) || tl.which('python', true);
  await tl.exec(python, ['-m', 'venv', venv]);
  await tl.exec(path.join(bin, process.platform === 'win32' ? 'python.exe' : 'python'),
    ['-m', 'pip', 'install', '--disable-pip-version-check', version ? `${pkg}==${version}` : pkg]);
  return exe;
}

async function run() {
  try {
    const args = deployctlArgs();
    const env = Object.assign({}, process.env, await azureEnv(tl.getInput('azureSubscription', false)));
    const exe = await deployctlPath();
    const cwd = tl.getPathInput('workingDirectory', false) || tl.getVariable('System.DefaultWorkingDirectory') || process.cwd();
    let code = await tl.tool(exe).arg(args).exec({ cwd, env, ignoreReturnCode: true });
    if (args[0] === 'plan' && (code === 0 || code === 3)) {
      tl.setVariable('hasChanges', code === 3 ? 'true' : 'false', false, true);
      code = 0;
    }
    if (code !== 0) {
      tl.setResult(tl.TaskResult.Failed, `deployctl ${args[0]} exited with code ${code}`);
    }
    // On 0, deployctl has already said Succeeded or SucceededWithIssues; the agent keeps the worst.
  } catch (err) {
    tl.setResult(tl.TaskResult.Failed, err && err.message ? err.message : String(err));
  } finally {
    removePrivateFiles();
  }
}

run();
