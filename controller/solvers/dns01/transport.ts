/**
 * Sends one DNS message and returns the answer: UDP first, TCP when the answer comes
 * back truncated (TC) or the message is too big for a plain UDP datagram (RFC 7766).
 *
 * Failures are `DnsTransportError` (no answer in time, connection refused, malformed
 * answer); callers turn them into CertfleetErrors with their own context.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { systemClock, type Clock } from '../../../shared/clock/index.js';
import { WireError } from './wire.js';

/** A DNS server: host (IP address) and port. */
export interface DnsServer {
  host: string;
  port: number;
}

/** `1.2.3.4`, `1.2.3.4:5353`, `[::1]:53`, `::1` -> server; port defaults to 53. */
export function parseServer(text: string, defaultPort = 53): DnsServer {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracketed) return { host: bracketed[1] ?? '', port: bracketed[2] === undefined ? defaultPort : Number(bracketed[2]) };
  if (net.isIPv6(text)) return { host: text, port: defaultPort };
  const idx = text.lastIndexOf(':');
  if (idx > 0) return { host: text.slice(0, idx), port: Number(text.slice(idx + 1)) };
  return { host: text, port: defaultPort };
}

/** `host:port` for messages. */
export function formatServer(s: DnsServer): string {
  return net.isIPv6(s.host) ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
}

export class DnsTransportError extends Error {
  constructor(
    message: string,
    readonly server: DnsServer,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'DnsTransportError';
  }
}

export interface ExchangeOptions {
  /** Per attempt (UDP, then TCP). Default 5000 ms. */
  timeoutMs?: number;
  /** Skip UDP. */
  tcp?: boolean;
  /**
   * Times the per-attempt timeout; default systemClock. The timeout bounds a real socket, so
   * callers leave it on the system clock even when their own loop runs on a manual one.
   */
  clock?: Clock;
}

/** Sends `message` to `server`; resolves with the answer carrying the same ID. */
export async function exchange(server: DnsServer, message: Buffer, opts: ExchangeOptions = {}): Promise<Buffer> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const clock = opts.clock ?? systemClock;
  if (!opts.tcp && message.length <= 512) {
    const answer = await exchangeUdp(server, message, timeoutMs, clock);
    // TC: the answer did not fit; ask again over TCP (RFC 1035 §4.2.1).
    if (((answer[2] ?? 0) & 0x02) === 0) return answer;
  }
  return exchangeTcp(server, message, timeoutMs, clock);
}

function exchangeUdp(server: DnsServer, message: Buffer, timeoutMs: number, clock: Clock): Promise<Buffer> {
  const id = message.readUInt16BE(0);
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(net.isIPv6(server.host) ? 'udp6' : 'udp4');
    const done = (err: Error | null, answer?: Buffer): void => {
      timer.stop();
      sock.close();
      if (err) reject(err);
      else resolve(answer ?? Buffer.alloc(0));
    };
    const timer = clock.after(timeoutMs, () => done(new DnsTransportError(`no answer from ${formatServer(server)} over UDP within ${timeoutMs} ms`, server)));
    sock.on('message', (msg, rinfo) => {
      // Ignore strays: only the server we asked, with our ID, answers this request.
      if (rinfo.port !== server.port || msg.length < 12 || msg.readUInt16BE(0) !== id) return;
      done(null, msg);
    });
    sock.on('error', (err) => done(new DnsTransportError(`UDP to ${formatServer(server)}: ${err.message}`, server, { cause: err })));
    sock.connect(server.port, server.host, () => {
      sock.send(message, (err) => {
        if (err) done(new DnsTransportError(`UDP to ${formatServer(server)}: ${err.message}`, server, { cause: err }));
      });
    });
  });
}

function exchangeTcp(server: DnsServer, message: Buffer, timeoutMs: number, clock: Clock): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: server.host, port: server.port });
    let buf = Buffer.alloc(0);
    let settled = false;
    const done = (err: Error | null, answer?: Buffer): void => {
      if (settled) return;
      settled = true;
      timer.stop();
      sock.destroy();
      if (err) reject(err);
      else resolve(answer ?? Buffer.alloc(0));
    };
    const timer = clock.after(timeoutMs, () => done(new DnsTransportError(`no answer from ${formatServer(server)} over TCP within ${timeoutMs} ms`, server)));
    sock.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(message.length);
      sock.write(Buffer.concat([len, message]));
    });
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length >= 2) {
        const need = buf.readUInt16BE(0);
        if (buf.length >= 2 + need) done(null, buf.subarray(2, 2 + need));
      }
    });
    sock.on('error', (err) => done(new DnsTransportError(`TCP to ${formatServer(server)}: ${err.message}`, server, { cause: err })));
    sock.on('close', () => done(new DnsTransportError(`${formatServer(server)} closed the TCP connection without an answer`, server)));
  });
}

/** True for errors of this module and malformed answers. */
export function isTransportError(err: unknown): err is DnsTransportError | WireError {
  return err instanceof DnsTransportError || err instanceof WireError;
}
