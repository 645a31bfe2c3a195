/**
 * Certificate keys and CSRs for ACME orders (pure apart from the key generator's
 * randomness; no network).
 */
import crypto from 'node:crypto';
import net from 'node:net';
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import type { KeyType } from '../../shared/model/index.js';
import { createOrderCsr } from '../../shared/pki-csr/index.js';

/** Off the main thread (RSA-4096 takes a second or more); resolves with the PKCS#8 PEM. */
function generatePem(type: 'ec' | 'rsa', params: { namedCurve: string } | { modulusLength: number }): Promise<string> {
  const encoding = { privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } } as const;
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, _publicKey: string, privateKey: string): void => (err ? reject(err) : resolve(privateKey));
    if (type === 'ec') crypto.generateKeyPair('ec', { ...(params as { namedCurve: string }), ...encoding }, done);
    else crypto.generateKeyPair('rsa', { ...(params as { modulusLength: number }), ...encoding }, done);
  });
}

/**
 * A new private key of `keyType` as PKCS#8 PEM. Rejects with CONFIG_INVALID for an
 * unknown key type (it comes from configuration).
 */
export async function generateKey(keyType: KeyType): Promise<string> {
  switch (keyType) {
    case 'ecdsa-p256':
      return generatePem('ec', { namedCurve: 'P-256' });
    case 'ecdsa-p384':
      return generatePem('ec', { namedCurve: 'P-384' });
    case 'rsa-2048':
    case 'rsa-3072':
    case 'rsa-4096': {
      return generatePem('rsa', { modulusLength: Number(keyType.slice(4)) });
    }
    default:
      throw new CertfleetError(ErrorCode.ConfigInvalid, `unknown key type: ${String(keyType)}`);
  }
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
