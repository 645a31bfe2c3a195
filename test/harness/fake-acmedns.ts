/**
 * A fake acme-dns server's HTTP API (github.com/joohoi/acme-dns, README "API"):
 *
 * - `POST /register` → 201 `{username, password, fulldomain, subdomain, allowfrom}`;
 * - `POST /update` with `X-Api-User` / `X-Api-Key` and `{subdomain, txt}` → 200 `{txt}`;
 *   wrong credentials or another account's subdomain: 401 `{"error":"forbidden"}`; a TXT
 *   value that is not 43 characters: 400 `{"error":"bad_txt"}`;
 * - `GET /health` → 200.
 *
 * Like acme-dns it keeps the two most recent values per subdomain: an update pushes out
 * the oldest. `fulldomain` is `<subdomain>.<domain>`.
 */
import crypto from 'node:crypto';
import type http from 'node:http';
import { FakeApi, TxtData, type FakeAnswer, type TxtMirror } from './fake-dns-api.js';

export interface FakeAcmeDnsAccount {
  username: string;
  password: string;
  fulldomain: string;
  subdomain: string;
  allowfrom: string[];
}

export class FakeAcmeDns extends FakeApi {
  readonly txt: TxtData;
  readonly accounts: FakeAcmeDnsAccount[] = [];

  constructor(private readonly opts: { domain: string; mirror?: TxtMirror }) {
    super();
    this.txt = new TxtData(opts.mirror);
  }

  /** Registers an account directly (what `POST /register` does); `subdomain` fixed for a zone file written in advance. */
  register(subdomain: string = crypto.randomUUID()): FakeAcmeDnsAccount {
    const acct = { username: crypto.randomUUID(), password: crypto.randomBytes(30).toString('base64url').slice(0, 40), fulldomain: `${subdomain}.${this.opts.domain}`, subdomain, allowfrom: [] };
    this.accounts.push(acct);
    return acct;
  }

  protected rateLimitAnswer(): FakeAnswer {
    return { status: 429, headers: { 'retry-after': '3' }, body: JSON.stringify({ error: 'too many requests' }) };
  }

  protected async handle(method: string, url: URL, headers: http.IncomingHttpHeaders, body: string): Promise<FakeAnswer> {
    if (method === 'GET' && url.pathname === '/health') return { status: 200, body: '' };
    if (method === 'POST' && url.pathname === '/register') return { status: 201, body: JSON.stringify(this.register()) };
    if (method === 'POST' && url.pathname === '/update') {
      const acct = this.accounts.find((a) => a.username === headers['x-api-user'] && a.password === headers['x-api-key']);
      let req: { subdomain?: string; txt?: string };
      try {
        req = JSON.parse(body) as typeof req;
      } catch {
        return { status: 400, body: JSON.stringify({ error: 'malformed_json_payload' }) };
      }
      if (!acct || acct.subdomain !== req.subdomain) return { status: 401, body: JSON.stringify({ error: 'forbidden' }) };
      if (typeof req.txt !== 'string' || req.txt.length !== 43) return { status: 400, body: JSON.stringify({ error: 'bad_txt' }) };
      // Two slots per subdomain: the newest value replaces the older of the two.
      const values = [...this.txt.get(acct.fulldomain), req.txt].slice(-2);
      await this.txt.set(acct.fulldomain, values, 1);
      return { status: 200, body: JSON.stringify({ txt: req.txt }) };
    }
    return { status: 404, body: JSON.stringify({ error: 'not found' }) };
  }
}
