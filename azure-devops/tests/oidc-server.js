// A stand-in for Azure DevOps' OIDC token endpoint (System.OidcRequestUri) on 127.0.0.1, for the
// workload identity federation test. Prints its port, answers POST ?serviceConnectionId=<id> with
// {oidcToken} when the job access token is right, and exits by itself after 30 s.
'use strict';
const http = require('http');
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  const ok = req.method === 'POST' && req.headers.authorization === 'Bearer job-access-token' &&
    url.searchParams.get('serviceConnectionId') === 'conn-wif' && url.searchParams.get('api-version');
  res.writeHead(ok ? 200 : 401, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(ok ? { oidcToken: 'eyJ.federated.token' } : { message: 'denied' }));
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
setTimeout(() => process.exit(0), 30000).unref();
