/**
 * The Vault KV v2 double (./vault-double.ts) as a process, for `deploy/quickstart.sh ha`:
 * HashiCorp Vault cannot be installed on the machines this project is built on, and
 * several controllers need one shared store. NOT a Vault: everything lives in this
 * process's memory and is gone when it stops; no policies, no seal.
 *
 *   node dist/test/harness/vault-double-main.js --port 18200 --token-file FILE
 *
 * Listens on 127.0.0.1:PORT (HTTP), writes its root token to FILE (0600, what the
 * controllers' `store.auth.tokenFile` names), prints one line once it listens, and stops
 * on SIGTERM or SIGINT.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { startVaultDouble } from './vault-double.js';

const { values } = parseArgs({ options: { port: { type: 'string' }, 'token-file': { type: 'string' } }, strict: true });
const port = Number(values.port ?? '0');
const tokenFile = values['token-file'];
if (!Number.isInteger(port) || port < 0 || port > 65535 || tokenFile === undefined) {
  process.stderr.write('usage: vault-double-main.js --port PORT --token-file FILE\n');
  process.exit(2);
}
const vault = await startVaultDouble({ port });
fs.writeFileSync(tokenFile, `${vault.rootToken}\n`, { mode: 0o600 });
fs.chmodSync(tokenFile, 0o600);
process.stdout.write(`vault KV v2 double (in memory, not a Vault) listening on ${vault.addr}; root token in ${tokenFile}\n`);
const stop = (): void => {
  void vault.close().then(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
