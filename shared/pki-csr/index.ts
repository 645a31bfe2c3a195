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
import net from 'node:net';
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

// Signature algorithms of order CSRs, by key: [OID content, hash, with NULL parameters].
const SIGNATURE_ALGORITHMS: Record<string, [string, string | null, boolean]> = {
  prime256v1: ['2a8648ce3d040302', 'sha256', false], // ecdsa-with-SHA256
  secp384r1: ['2a8648ce3d040303', 'sha384', false], // ecdsa-with-SHA384
  secp521r1: ['2a8648ce3d040304', 'sha512', false], // ecdsa-with-SHA512
  rsa: ['2a864886f70d01010b', 'sha256', true], // sha256WithRSAEncryption
  ed25519: ['2b6570', null, false], // Ed25519
};
const OID_EXTENSION_REQUEST = '2a864886f70d01090e'; // 1.2.840.113549.1.9.14
const OID_SUBJECT_ALT_NAME = '551d11'; // 2.5.29.17

/**
 * A PKCS#10 CSR (PEM) for an ACME order: every name of `names` as a subjectAltName (a DNS
 * name, or an IP address when it is an IPv4/IPv6 literal), subject CN=`commonName` when
 * given (else an empty subject), signed with `privateKey` (ECDSA P-256/P-384/P-521 with
 * SHA-256/384/512 as acme-client signs them, RSA with SHA-256, Ed25519).
 *
 * Encoded here with node:crypto instead of through an ASN.1 library: the controller makes
 * one per certificate, and the library path (WebCrypto key import, ASN.1 object trees)
 * cost several milliseconds of its one thread each (issue #13). Throws TypeError for an
 * unsupported key, an empty `names`, or a DNS name that is not ASCII (IA5String).
 */
export function createOrderCsr(privateKey: crypto.KeyObject, names: readonly string[], commonName?: string): string {
  if (names.length === 0) throw new TypeError('a CSR needs at least one name');
  const curve = privateKey.asymmetricKeyDetails?.namedCurve;
  const alg = SIGNATURE_ALGORITHMS[privateKey.asymmetricKeyType === 'ec' ? (curve ?? '') : (privateKey.asymmetricKeyType ?? '')];
  if (alg === undefined) throw new TypeError(`unsupported key for a CSR: ${privateKey.asymmetricKeyType ?? 'unknown'}${curve === undefined ? '' : ` ${curve}`}`);
  const [oid, hash, nullParams] = alg;
  const generalNames = names.map((name) => {
    const ip = net.isIP(name);
    if (ip !== 0) return der(0x87, ip === 4 ? Buffer.from(name.split('.').map(Number)) : ipv6Bytes(name)); // [7] iPAddress
    if (!/^[\x20-\x7e]+$/.test(name)) throw new TypeError(`not an ASCII DNS name: ${JSON.stringify(name)}`);
    return der(0x82, Buffer.from(name, 'ascii')); // [2] dNSName
  });
  const san = seq(der(0x06, hex(OID_SUBJECT_ALT_NAME)), der(0x04, seq(...generalNames)));
  const attributes = der(0xa0, seq(der(0x06, hex(OID_EXTENSION_REQUEST)), set(seq(san))));
  const subject = commonName === undefined ? seq() : seq(set(seq(der(0x06, hex(OID_COMMON_NAME)), der(0x0c, Buffer.from(commonName, 'utf8')))));
  const spki = crypto.createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const info = seq(der(0x02, Buffer.from([0])), subject, spki, attributes);
  const signature = crypto.sign(hash, info, privateKey);
  const algorithm = nullParams ? seq(der(0x06, hex(oid)), der(0x05, Buffer.alloc(0))) : seq(der(0x06, hex(oid)));
  const csr = seq(info, algorithm, der(0x03, Buffer.concat([Buffer.from([0]), signature])));
  const b64 = csr.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;
}

/** The 16 bytes of an IPv6 literal (net.isIP said it is one; an embedded IPv4 tail allowed). */
function ipv6Bytes(addr: string): Buffer {
  let text = addr.split('%')[0] ?? '';
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4 !== null) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const groups = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}
