/**
 * `certfleet certs` asks for the certificate summaries page by page (issue #13: one answer
 * for 10,000 certificates was several megabytes). Proves: the controller's pages
 * (controller/operator pageOf) and the CLI's loop (cli/operator listAllCertificates)
 * together return every certificate exactly once, in configuration order, for any page
 * size, and the answer is the one an unpaged call gives; a token that names no
 * certificate is refused.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { listAllCertificates } from '../../cli/operator.js';
import { pageOf } from '../../controller/operator/index.js';
import { ErrorCode, isCertfleetError } from '../../shared/errors/index.js';
import type { pb } from '../../shared/grpc/index.js';

const summary = (name: string): pb.CertificateSummary__Output => ({ name, state: 'ready' }) as unknown as pb.CertificateSummary__Output;

/** A controller answering ListCertificates from `names` with pageOf, counting calls. */
function controller(names: string[]) {
  const calls: Array<{ pageSize: number; pageToken: string }> = [];
  return {
    calls,
    listCertificates(req: pb.ListCertificatesRequest = {}): Promise<pb.ListCertificatesResponse__Output> {
      const pageSize = req.pageSize ?? 0;
      const pageToken = req.pageToken ?? '';
      calls.push({ pageSize, pageToken });
      const { items, nextPageToken } = pageOf(names, pageSize, pageToken, (n) => n);
      return Promise.resolve({ certificates: items.map(summary), nextPageToken });
    },
  };
}

void describe('certificate list paging', () => {
  for (const [count, size] of [
    [0, 500],
    [1, 500],
    [499, 500],
    [500, 500],
    [501, 500],
    [10_000, 500],
    [10_000, 1000],
    [7, 1],
    [7, 3],
  ] as const) {
    void it(`${count} certificates in pages of ${size}: each exactly once, in order, as one unpaged answer`, async () => {
      const names = Array.from({ length: count }, (_, i) => `cert-${String(count - i).padStart(5, '0')}`); // not sorted by name
      const c = controller(names);
      const all = await listAllCertificates(c, size);
      assert.deepEqual(all.certificates.map((s) => s.name), names);
      assert.equal(new Set(all.certificates.map((s) => s.name)).size, count);
      assert.equal(c.calls.length, Math.max(1, Math.ceil(count / size)));
      const unpaged = await c.listCertificates({});
      assert.deepEqual(all.certificates, unpaged.certificates);
      assert.equal(unpaged.nextPageToken, '');
    });
  }

  void it('a token that names no configured certificate is USAGE_INVALID, not an empty or repeated page', () => {
    assert.throws(
      () => pageOf(['a', 'b'], 1, 'gone', (n) => n),
      (err: unknown) => isCertfleetError(err, ErrorCode.UsageInvalid),
    );
    assert.deepEqual(pageOf(['a', 'b', 'c'], 2, 'a', (n) => n), { items: ['b', 'c'], nextPageToken: '' });
    assert.deepEqual(pageOf(['a', 'b', 'c'], 0, '', (n) => n), { items: ['a', 'b', 'c'], nextPageToken: '' });
  });
});
