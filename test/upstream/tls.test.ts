import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { startFerretDB, type RunningFerretDB } from '../../src/testing/ferretdb.js';
import { connect, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { DEFAULT_DATABASE, expectNothingUnderLogicalNames, readPhysical, sandboxOf } from '../helpers/physical.js';

/** A throwaway CA and a server certificate for 127.0.0.1, made with openssl. */
function makeCertificates(dir: string): { ca: string; cert: string; key: string } {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=mdb-runtime test CA');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
  fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'ext.cnf');
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') };
}

const FAST_FAIL = 'upstream:\n  server_selection_timeout_ms: 1500\n  connect_timeout_ms: 1500\n';

describe('upstream over TLS', () => {
  let dir: string;
  let certs: { ca: string; cert: string; key: string };
  let upstream: RunningFerretDB;
  let proxy: TestProxy | undefined;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-tls-'));
    certs = makeCertificates(dir);
    upstream = await startFerretDB(inject('ferretdbBinary'), { tls: { certFile: certs.cert, keyFile: certs.key } });
  });
  afterAll(async () => {
    await proxy?.stop();
    await upstream.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('forwards over TLS when the upstream URI asks for it, verifying the server certificate', async () => {
    // The built-in default physical database (this suite has its own FerretDB, so it can use it).
    proxy = await startTestProxy({ upstreamUri: `${upstream.uri}?tls=true&tlsCAFile=${encodeURIComponent(certs.ca)}`, runtimeYaml: 'shutdown_grace_ms: 5000\n' });
    const client = await connect(proxy.uri('playground'));
    const db = uniqueDb('tls');
    await client.db(db).collection('t').insertMany([{ n: 1 }, { n: 2 }]);
    const viaProxy = await client.db(db).collection('t').find({}, { projection: { _id: 0 } }).sort({ n: 1 }).toArray();
    await client.close();
    expect(viaProxy).toEqual([{ n: 1 }, { n: 2 }]);

    // The documents really are on the TLS upstream (its own server: the default physical database),
    // in the app's physical collection, tagged, and nothing under the name the client used.
    const sandbox = sandboxOf(proxy, 'playground');
    expect(sandbox.database).toBe(DEFAULT_DATABASE);
    const direct = await connect(`${upstream.uri}?tls=true&tlsCAFile=${encodeURIComponent(certs.ca)}`);
    try {
      expect(await readPhysical(direct, sandbox, 't', { sort: { n: 1 }, withoutId: true })).toEqual([{ n: 1 }, { n: 2 }]);
      await expectNothingUnderLogicalNames(direct, sandbox, db, ['t']);
    } finally {
      await direct.close();
    }
  });

  it('refuses to start when the upstream certificate is not trusted', async () => {
    await expect(
      startTestProxy({ upstreamUri: `${upstream.uri}?tls=true`, runtimeYaml: FAST_FAIL }),
    ).rejects.toThrow(/certificate|self.signed|Server selection timed out/i);
  });

  it('fails plain-TCP requests against a TLS-only upstream instead of hanging', async () => {
    await expect(startTestProxy({ upstreamUri: upstream.uri, runtimeYaml: FAST_FAIL })).rejects.toThrow(/Server selection timed out|closed|reset/i);
  });
});
