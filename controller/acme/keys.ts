/**
 * Certificate keys and CSRs for ACME orders (pure apart from the key generator's
 * randomness; no network).
 */
import crypto from 'node:crypto';
import net from 'node:net';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import type { KeyType } from '../../shared/model/index.js';
import { createOrderCsr } from '../../shared/pki-csr/index.js';

/**
 * A new key pair, generated off the main thread (RSA-4096 takes a second or more), as
 * KeyObjects: not as PEM to parse again (parsing a PKCS#8 PEM costs ~1.5 ms of the thread
 * with OpenSSL 3's decoders, ten times the generation of a P-256 key; issue #13).
 */
function generatePair(type: 'ec' | 'rsa', params: { namedCurve: string } | { modulusLength: number }): Promise<crypto.KeyObject> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, _publicKey: crypto.KeyObject, privateKey: crypto.KeyObject): void => (err ? reject(err) : resolve(privateKey));
    if (type === 'ec') crypto.generateKeyPair('ec', params as { namedCurve: string }, done);
    else crypto.generateKeyPair('rsa', params as { modulusLength: number }, done);
  });
}

/** A new private key: the parsed key for signing now, and its PKCS#8 PEM to keep. */
export interface NewKey {
  keyPem: string;
  key: crypto.KeyObject;
}

/**
 * A new private key of `keyType`, parsed and as PKCS#8 PEM. Rejects with CONFIG_INVALID
 * for an unknown key type (it comes from configuration).
 */
export async function generateKeyObject(keyType: KeyType): Promise<NewKey> {
  let key: crypto.KeyObject;
  switch (keyType) {
    case 'ecdsa-p256':
      key = await generatePair('ec', { namedCurve: 'P-256' });
      break;
    case 'ecdsa-p384':
      key = await generatePair('ec', { namedCurve: 'P-384' });
      break;
    case 'rsa-2048':
    case 'rsa-3072':
    case 'rsa-4096':
      key = await generatePair('rsa', { modulusLength: Number(keyType.slice(4)) });
      break;
    default:
      throw new CertfleetError(ErrorCode.ConfigInvalid, `unknown key type: ${String(keyType)}`);
  }
  return { keyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string, key };
}

/**
 * A new private key of `keyType` as PKCS#8 PEM. Rejects with CONFIG_INVALID for an
 * unknown key type (it comes from configuration).
 */
export async function generateKey(keyType: KeyType): Promise<string> {
  return (await generateKeyObject(keyType)).keyPem;
}

/** A new ACME account key: ECDSA P-256 (ES256, accepted by every ACME CA), PKCS#8 PEM. */
export function generateAccountKey(): Promise<string> {
  return generateKey('ecdsa-p256');
}

/**
 * A PKCS#10 CSR (PEM) for `names`, signed with `keyPem`: every name as a SAN (DNS or IP),
 * the first as commonName when it is a DNS name that fits the 64-character limit
 * (RFC 5280 ub-common-name; a longer CN makes CAs reject the CSR, and ACME needs only
 * the SANs). `keyPem` may also be the key already parsed. Rejects with CSR_INVALID for
 * no names or an unusable key.
 */
export function createCsr(keyPem: string | crypto.KeyObject, names: readonly string[]): Promise<string> {
  const first = names[0];
  if (first === undefined) return Promise.reject(new CertfleetError(ErrorCode.CsrInvalid, 'a CSR needs at least one name'));
  const commonName = first.length <= 64 && net.isIP(first) === 0 ? first : undefined;
  try {
    // Encoded directly (shared/pki-csr), not through acme-client's ASN.1 library path:
    // that one cost several ms of the controller's thread per certificate (issue #13).
    const key = typeof keyPem === 'string' ? crypto.createPrivateKey(keyPem) : keyPem;
    return Promise.resolve(createOrderCsr(key, names, commonName));
  } catch (err) {
    return Promise.reject(
      new CertfleetError(ErrorCode.CsrInvalid, `cannot create CSR: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      }),
    );
  }
}
