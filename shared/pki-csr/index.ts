/**
 * Key and certificate-signing-request creation for agent enrolment.
 *
 * Lives in shared/ so the agent can create its key and CSR without importing controller
 * code. The private key is generated where it will be used and never leaves that
 * process: only the CSR (public key plus a self-signature proving possession) goes to
 * the controller, which ignores the subject it asks for and sets the identity itself.
 *
 * Only node:crypto, no X.509 library: the agent stays light (an X.509 library would also
 * need a global Reflect polyfill loaded first). A PKCS#10 request for one EC key and a
 * CN is a fixed shape, so it is encoded here directly; controller/pki parses and
 * verifies it with a full library, and the tests check it with OpenSSL too.
 *
 * Keys are ECDSA P-256 in PKCS#8 PEM; the CSR is signed with ECDSA/SHA-256.
 */
import crypto from 'node:crypto';
import { promisify } from 'node:util';

const generateKeyPair = promisify(crypto.generateKeyPair);

// OIDs, already in their DER content encoding.
const OID_ECDSA_WITH_SHA256 = '2a8648ce3d040302'; // 1.2.840.10045.4.3.2
const OID_COMMON_NAME = '550403'; // 2.5.4.3

/**
 * Creates the agent's private key (ECDSA P-256, PKCS#8 PEM — secret, never log it) and a
 * PKCS#10 CSR for it with subject CN=<agent>.
 *
 * The subject is only a hint for people reading the CSR: the controller takes the
 * identity from the enrolment token, whatever the CSR says. `agent` must be 1–64
 * characters (RangeError otherwise; agent names are far shorter).
 */
export async function createAgentKeyAndCsr(agent: string): Promise<{ keyPem: string; csrPem: string }> {
  if (agent.length < 1 || agent.length > 64) throw new RangeError('agent name must be 1-64 characters');
  const { privateKey, publicKey } = await generateKeyPair('ec', { namedCurve: 'P-256' });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  return { keyPem, csrPem: createCsr(privateKey, publicKey, agent) };
}

/** A PKCS#10 CSR (PEM) for an EC key pair with subject CN=<commonName>, signed ECDSA/SHA-256. */
export function createCsr(privateKey: crypto.KeyObject, publicKey: crypto.KeyObject, commonName: string): string {
  if (privateKey.asymmetricKeyType !== 'ec') throw new TypeError('createCsr supports EC keys only');
  const subject = seq(set(seq(der(0x06, hex(OID_COMMON_NAME)), der(0x0c, Buffer.from(commonName, 'utf8')))));
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const info = seq(der(0x02, Buffer.from([0])), subject, spki, der(0xa0, Buffer.alloc(0)));
  // node signs EC keys with a DER-encoded (r, s) by default, which is what X.509 wants.
  const signature = crypto.sign('sha256', info, privateKey);
  const csr = seq(info, seq(der(0x06, hex(OID_ECDSA_WITH_SHA256))), der(0x03, Buffer.concat([Buffer.from([0]), signature])));
  const b64 = csr.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;
}

function hex(s: string): Buffer {
  return Buffer.from(s, 'hex');
}

/** One DER TLV with definite length. */
function der(tag: number, content: Buffer): Buffer {
  const len = content.length;
  let header: Buffer;
  if (len < 0x80) {
    header = Buffer.from([tag, len]);
  } else {
    const lenBytes: number[] = [];
    for (let n = len; n > 0; n >>= 8) lenBytes.unshift(n & 0xff);
    header = Buffer.from([tag, 0x80 | lenBytes.length, ...lenBytes]);
  }
  return Buffer.concat([header, content]);
}

function seq(...parts: Buffer[]): Buffer {
  return der(0x30, Buffer.concat(parts));
}

function set(...parts: Buffer[]): Buffer {
  return der(0x31, Buffer.concat(parts));
}
