/**
 * A real headless Chromium (Debian package `chromium`) driven over the Chrome DevTools
 * Protocol, for tests of the web console. Nothing is downloaded: the browser is the
 * system's, and the protocol's WebSocket is spoken here over node:http (a few dozen
 * lines; Node 20 has no WebSocket client without a flag, and no package is added for it).
 *
 * The browser runs with its background networking off (no component updates, no
 * safe-browsing or metrics pings), so it only talks to the loopback pages a test opens.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Socket } from 'node:net';
import { startProcess, type Started } from './process.js';
import { tempDir } from './tmp.js';

/** Where Debian installs the browser. */
export const CHROMIUM = '/usr/bin/chromium';

type Json = Record<string, unknown>;
type Listener = (params: Json, sessionId: string | undefined) => void;

/**
 * One CDP connection over a WebSocket (RFC 6455 client side: masked frames out; text,
 * continuation, ping and close frames in).
 */
class CdpSocket {
  private buffer = Buffer.alloc(0);
  private fragments: Buffer[] = [];
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: Json) => void; reject: (e: Error) => void; method: string }>();
  private readonly listeners = new Map<string, Set<Listener>>();
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('close', () => this.onClose(new Error('CDP connection closed')));
    socket.on('error', (err) => this.onClose(err));
  }

  static connect(wsUrl: string): Promise<CdpSocket> {
    const url = new URL(wsUrl);
    return new Promise((resolve, reject) => {
      const req = http.request({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': randomBytes(16).toString('base64') },
      });
      req.once('upgrade', (_res, socket, head) => {
        const ws = new CdpSocket(socket);
        if (head.length > 0) ws.onData(head);
        resolve(ws);
      });
      req.once('response', (res) => reject(new Error(`CDP WebSocket refused: HTTP ${res.statusCode ?? '?'}`)));
      req.once('error', reject);
      req.end();
    });
  }

  /** Sends a command (to a page when `sessionId` is given) and resolves with its result. */
  send(method: string, params: Json = {}, sessionId?: string): Promise<Json> {
    if (this.closed) return Promise.reject(new Error(`CDP connection closed before ${method}`));
    const id = this.nextId++;
    const message = JSON.stringify({ id, method, params, ...(sessionId === undefined ? {} : { sessionId }) });
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.writeFrame(0x1, Buffer.from(message, 'utf8'));
    });
  }

  on(event: string, fn: Listener): () => void {
    let set = this.listeners.get(event);
    if (set === undefined) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  close(): void {
    if (this.closed) return;
    this.writeFrame(0x8, Buffer.alloc(0));
    this.socket.end();
    this.onClose(new Error('CDP connection closed'));
  }

  private writeFrame(opcode: number, payload: Buffer): void {
    const mask = randomBytes(4);
    const len = payload.length;
    const head = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len]) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
    if (len >= 126 && len < 65536) {
      head[0] = 0x80 | opcode;
      head[1] = 0x80 | 126;
      head.writeUInt16BE(len, 2);
    } else if (len >= 65536) {
      head[0] = 0x80 | opcode;
      head[1] = 0x80 | 127;
      head.writeBigUInt64BE(BigInt(len), 2);
    }
    const masked = Buffer.alloc(len);
    for (let i = 0; i < len; i++) masked[i] = (payload[i] ?? 0) ^ (mask[i % 4] ?? 0);
    this.socket.write(Buffer.concat([head, mask, masked]));
  }

  private onData(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.buffer.length < 2) return;
      const b0 = this.buffer[0] ?? 0;
      const b1 = this.buffer[1] ?? 0;
      let len = b1 & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (this.buffer.length < 4) return;
        len = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (this.buffer.length < 10) return;
        len = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      const masked = (b1 & 0x80) !== 0;
      const maskKey = masked ? this.buffer.subarray(offset, offset + 4) : undefined;
      if (masked) offset += 4;
      if (this.buffer.length < offset + len) return;
      let payload = this.buffer.subarray(offset, offset + len);
      if (maskKey !== undefined) payload = Buffer.from(payload.map((b, i) => b ^ (maskKey[i % 4] ?? 0)));
      this.buffer = this.buffer.subarray(offset + len);
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      if (opcode === 0x8) {
        this.close();
        return;
      }
      if (opcode === 0x9) {
        this.writeFrame(0xa, Buffer.from(payload));
        continue;
      }
      if (opcode === 0x1 || opcode === 0x0) {
        this.fragments.push(Buffer.from(payload));
        if (fin) {
          const text = Buffer.concat(this.fragments).toString('utf8');
          this.fragments = [];
          this.onMessage(JSON.parse(text) as Json);
        }
      }
    }
  }

  private onMessage(msg: Json): void {
    if (typeof msg['id'] === 'number') {
      const p = this.pending.get(msg['id']);
      if (p === undefined) return;
      this.pending.delete(msg['id']);
      const error = msg['error'] as { message?: string } | undefined;
      if (error !== undefined) p.reject(new Error(`${p.method}: ${error.message ?? JSON.stringify(error)}`));
      else p.resolve((msg['result'] as Json | undefined) ?? {});
      return;
    }
    const method = msg['method'];
    if (typeof method !== 'string') return;
    for (const fn of this.listeners.get(method) ?? []) fn((msg['params'] as Json | undefined) ?? {}, msg['sessionId'] as string | undefined);
  }

  private onClose(err: Error): void {
    this.closed = true;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}

/** One tab. */
export interface Page {
  /** Navigates and resolves when the new document's load event fired. */
  goto(url: string, timeoutMs?: number): Promise<void>;
  /** Evaluates `expression` in the page (promises awaited) and returns its JSON value; a thrown error rejects. */
  evaluate<T>(expression: string): Promise<T>;
  /** Polls `expression` until it is truthy and returns that value; rejects after `timeoutMs` with `what`. */
  waitFor<T>(what: string, expression: string, timeoutMs?: number): Promise<T>;
  /** A PNG of the viewport (the whole page when `fullPage`), written to `file`. */
  screenshot(file: string, opts?: { fullPage?: boolean }): Promise<void>;
  /** The messages of every alert/confirm the page opened; each was answered with `dialogAnswer`. */
  dialogs: string[];
  /** What confirm() dialogs are answered: true (OK) by default. */
  dialogAnswer: boolean;
  /** Uncaught exceptions, console errors and browser log errors (CSP violations, failed loads). */
  errors: string[];
  close(): Promise<void>;
}

/** A running browser. */
export interface Browser {
  newPage(opts?: { width?: number; height?: number }): Promise<Page>;
  /** Everything Chromium printed, for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

/**
 * Starts headless Chromium on a free loopback debugging port with a fresh profile.
 * Rejects when the binary is missing (the Debian package `chromium`; test/run.sh and
 * .ci/run install it) or does not open its debugging port within `timeoutMs`.
 */
export async function startChromium(opts: { timeoutMs?: number } = {}): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install the Debian package chromium`);
  const profile = tempDir('certfleet-chromium-');
  const args = [
    '--headless=new',
    '--remote-debugging-address=127.0.0.1',
    '--remote-debugging-port=0',
    `--user-data-dir=${profile}`,
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-default-apps',
    '--disable-extensions',
    '--disable-domain-reliability',
    '--disable-client-side-phishing-detection',
    '--metrics-recording-only',
    '--no-pings',
    '--no-proxy-server',
    '--hide-scrollbars',
    '--font-render-hinting=none',
    // Root has no user namespaces for the sandbox in containers; tests run as root in CI.
    ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
    'about:blank',
  ];
  const proc: Started = startProcess('chromium', CHROMIUM, args);
  // Chromium writes its port and browser target path to DevToolsActivePort in the profile.
  const portFile = path.join(profile, 'DevToolsActivePort');
  const until = Date.now() + (opts.timeoutMs ?? 30_000);
  let wsUrl: string | undefined;
  while (wsUrl === undefined) {
    if (proc.child.exitCode !== null) throw new Error(`chromium exited:\n${proc.output()}`);
    if (Date.now() > until) throw new Error(`chromium did not open its debugging port:\n${proc.output()}`);
    const [port, target] = fs.existsSync(portFile) ? fs.readFileSync(portFile, 'utf8').split('\n') : [];
    if (port !== undefined && target !== undefined && port !== '' && target !== '') wsUrl = `ws://127.0.0.1:${port}${target}`;
    else await new Promise((r) => setTimeout(r, 100));
  }
  const cdp = await CdpSocket.connect(wsUrl);

  return {
    output: () => proc.output(),
    async newPage(size = {}) {
      const { targetId } = (await cdp.send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
      const { sessionId } = (await cdp.send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
      const send = (method: string, params: Json = {}): Promise<Json> => cdp.send(method, params, sessionId);
      const on = (event: string, fn: (p: Json) => void): (() => void) => cdp.on(event, (p, sid) => (sid === sessionId ? fn(p) : undefined));
      const page: Page = {
        dialogs: [],
        dialogAnswer: true,
        errors: [],
        async goto(url, timeoutMs = 30_000) {
          const loaded = new Promise<void>((resolve, reject) => {
            const t = setTimeout(() => reject(new Error(`page ${url} did not load within ${timeoutMs} ms`)), timeoutMs);
            const off = on('Page.loadEventFired', () => {
              clearTimeout(t);
              off();
              resolve();
            });
          });
          const nav = (await send('Page.navigate', { url })) as { errorText?: string };
          if (nav.errorText !== undefined && nav.errorText !== '') throw new Error(`navigating to ${url}: ${nav.errorText}`);
          await loaded;
        },
        async evaluate<T>(expression: string): Promise<T> {
          const r = (await send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true })) as {
            result: { value?: unknown };
            exceptionDetails?: { text?: string; exception?: { description?: string } };
          };
          if (r.exceptionDetails !== undefined) throw new Error(`in page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text ?? 'exception'}`);
          return r.result.value as T;
        },
        async waitFor<T>(what: string, expression: string, timeoutMs = 30_000): Promise<T> {
          const deadline = Date.now() + timeoutMs;
          let last: unknown;
          for (;;) {
            try {
              const v = await page.evaluate<T>(expression);
              if (v !== undefined && v !== null && v !== false && v !== '' && v !== 0) return v;
              last = v;
            } catch (err) {
              last = err;
            }
            if (Date.now() > deadline) {
              throw new Error(`waited ${timeoutMs} ms for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}; page errors: ${page.errors.join(' | ') || 'none'}`);
            }
            await new Promise((r) => setTimeout(r, 200));
          }
        },
        async screenshot(file, shot = {}) {
          const r = (await send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: shot.fullPage === true })) as { data: string };
          fs.mkdirSync(path.dirname(file), { recursive: true });
          fs.writeFileSync(file, Buffer.from(r.data, 'base64'));
        },
        async close() {
          await cdp.send('Target.closeTarget', { targetId }).catch(() => undefined);
        },
      };
      on('Page.javascriptDialogOpening', (p) => {
        page.dialogs.push(String(p['message']));
        void send('Page.handleJavaScriptDialog', { accept: page.dialogAnswer }).catch(() => undefined);
      });
      on('Runtime.exceptionThrown', (p) => page.errors.push(`exception: ${JSON.stringify((p['exceptionDetails'] as Json | undefined)?.['exception'] ?? p)}`));
      on('Runtime.consoleAPICalled', (p) => {
        if (p['type'] === 'error') page.errors.push(`console.error: ${JSON.stringify(p['args'])}`);
      });
      on('Log.entryAdded', (p) => {
        const e = p['entry'] as { level?: string; text?: string; url?: string } | undefined;
        if (e?.level === 'error') page.errors.push(`log: ${e.text ?? ''} ${e.url ?? ''}`);
      });
      await send('Page.enable');
      await send('Runtime.enable');
      await send('Log.enable');
      await send('Emulation.setDeviceMetricsOverride', { width: size.width ?? 1280, height: size.height ?? 900, deviceScaleFactor: 1, mobile: false });
      return page;
    },
    async stop() {
      cdp.close();
      await proc.stop(5000);
      // Chromium's helper processes may still be writing the profile for a moment.
      try {
        fs.rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
      } catch {
        // a leftover temporary profile is harmless
      }
    },
  };
}
