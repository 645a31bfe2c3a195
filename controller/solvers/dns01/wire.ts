/**
 * The DNS wire format (RFC 1035), as much as DNS-01 needs: queries, RFC 2136 UPDATE
 * messages, and a decoder that keeps every record's byte offsets — TSIG verification
 * (tsig.ts) must cut the TSIG record out of the exact bytes the server sent, which a
 * decode-and-re-encode library cannot give back.
 *
 * Names are written uncompressed except where `compress` is asked for; the decoder
 * follows compression pointers (with a loop guard). Nothing here does I/O.
 */

export const RRType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  TXT: 16,
  AAAA: 28,
  OPT: 41,
  TSIG: 250,
  ANY: 255,
} as const;

export const RRClass = {
  IN: 1,
  NONE: 254,
  ANY: 255,
} as const;

export const Opcode = { QUERY: 0, UPDATE: 5 } as const;

/** Response codes, including the TSIG ones carried in the TSIG record's error field. */
export const Rcode: Record<number, string> = {
  0: 'NOERROR',
  1: 'FORMERR',
  2: 'SERVFAIL',
  3: 'NXDOMAIN',
  4: 'NOTIMP',
  5: 'REFUSED',
  6: 'YXDOMAIN',
  7: 'YXRRSET',
  8: 'NXRRSET',
  9: 'NOTAUTH',
  10: 'NOTZONE',
  16: 'BADSIG',
  17: 'BADKEY',
  18: 'BADTIME',
  22: 'BADTRUNC',
};

/** Name of an rcode for messages, e.g. 5 -> "REFUSED". */
export function rcodeName(code: number): string {
  return Rcode[code] ?? `RCODE${code}`;
}

/** A malformed message or name; the decoder and encoder throw only this. */
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WireError';
  }
}

/** `Example.COM` / `example.com.` -> `example.com.` (absolute, lower-case). */
export function canonicalName(name: string): string {
  const lower = name.toLowerCase();
  if (lower === '' || lower === '.') return '.';
  return lower.endsWith('.') ? lower : `${lower}.`;
}

/** The labels of `name` (no empty root label). Throws WireError on an over-long label or name. */
export function labels(name: string): string[] {
  const abs = name.endsWith('.') ? name.slice(0, -1) : name;
  if (abs === '') return [];
  const parts = abs.split('.');
  let total = 1;
  for (const p of parts) {
    const len = Buffer.byteLength(p, 'utf8');
    if (len === 0 || len > 63) throw new WireError(`bad label "${p}" in "${name}"`);
    total += len + 1;
  }
  if (total > 255) throw new WireError(`name too long: "${name}"`);
  return parts;
}

/** Uncompressed wire form of `name`. With `lower`, the canonical form (RFC 4034 §6.2). */
export function encodeName(name: string, lower = false): Buffer {
  const parts = labels(lower ? name.toLowerCase() : name);
  const out: Buffer[] = [];
  for (const p of parts) {
    const b = Buffer.from(p, 'utf8');
    out.push(Buffer.from([b.length]), b);
  }
  out.push(Buffer.from([0]));
  return Buffer.concat(out);
}

/** TXT RDATA: one or more <character-string>s of at most 255 bytes each. */
export function encodeTxt(value: string): Buffer {
  const data = Buffer.from(value, 'utf8');
  const out: Buffer[] = [];
  for (let i = 0; i === 0 || i < data.length; i += 255) {
    const chunk = data.subarray(i, i + 255);
    out.push(Buffer.from([chunk.length]), chunk);
  }
  return Buffer.concat(out);
}

/** Accumulates a message; names go through a compression table when asked. */
export class MessageWriter {
  private readonly chunks: Buffer[] = [];
  private length = 0;
  /** Lower-case name suffix -> offset of its first occurrence. */
  private readonly suffixes = new Map<string, number>();

  bytes(b: Buffer): this {
    this.chunks.push(b);
    this.length += b.length;
    return this;
  }

  u16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    return this.bytes(b);
  }

  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(v >>> 0);
    return this.bytes(b);
  }

  /**
   * Writes `name`, pointing at an earlier occurrence of its longest known suffix when
   * `compress` is set (RFC 1035 §4.1.4); with `remember`, every suffix written becomes
   * a target for later names.
   */
  name(name: string, compress = true, remember = true): this {
    const parts = labels(name);
    for (let i = 0; i < parts.length; i++) {
      const suffix = parts.slice(i).join('.').toLowerCase();
      const at = compress ? this.suffixes.get(suffix) : undefined;
      if (at !== undefined) return this.u16(0xc000 | at);
      if (remember && this.length < 0x3fff && !this.suffixes.has(suffix)) this.suffixes.set(suffix, this.length);
      const b = Buffer.from(parts[i] ?? '', 'utf8');
      this.bytes(Buffer.from([b.length])).bytes(b);
    }
    return this.bytes(Buffer.from([0]));
  }

  /** A resource record with opaque RDATA. */
  record(rr: { name: string; type: number; klass: number; ttl: number; rdata: Buffer }, compress = true): this {
    return this.name(rr.name, compress).u16(rr.type).u16(rr.klass).u32(rr.ttl).u16(rr.rdata.length).bytes(rr.rdata);
  }

  toBuffer(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

export interface Header {
  id: number;
  /** QR, opcode, AA, TC, RD, RA, Z, rcode as one 16-bit field. */
  flags: number;
  qdcount: number;
  ancount: number;
  nscount: number;
  arcount: number;
}

export function writeHeader(w: MessageWriter, h: Header): void {
  w.u16(h.id).u16(h.flags).u16(h.qdcount).u16(h.ancount).u16(h.nscount).u16(h.arcount);
}

/** A standard query for `name`/`type`, class IN; `rd` asks a resolver to recurse. */
export function buildQuery(id: number, name: string, type: number, rd: boolean): Buffer {
  const w = new MessageWriter();
  writeHeader(w, { id, flags: rd ? 0x0100 : 0, qdcount: 1, ancount: 0, nscount: 0, arcount: 0 });
  w.name(name).u16(type).u16(RRClass.IN);
  return w.toBuffer();
}

/** One change to a TXT RRset in an UPDATE. */
export interface TxtChange {
  op: 'add' | 'delete';
  name: string;
  value: string;
  /** TTL of an added record; ignored for deletes (always 0, RFC 2136 §2.5.4). */
  ttl: number;
}

/**
 * An RFC 2136 UPDATE for `zone`: no prerequisites; each change adds one TXT record
 * (class IN) or deletes exactly that record (class NONE, §2.5.4) — never the whole
 * RRset, so another value at the same name (wildcard + apex, another controller) stays.
 */
export function buildTxtUpdate(id: number, zone: string, changes: readonly TxtChange[]): Buffer {
  const w = new MessageWriter();
  writeHeader(w, { id, flags: Opcode.UPDATE << 11, qdcount: 1, ancount: 0, nscount: changes.length, arcount: 0 });
  // The zone name is not a compression target: BIND's nsupdate does the same, which
  // keeps our messages byte-identical to its (test/unit/rfc2136.test.ts).
  w.name(zone, false, false).u16(RRType.SOA).u16(RRClass.IN);
  for (const c of changes) {
    w.record({
      name: c.name,
      type: RRType.TXT,
      klass: c.op === 'add' ? RRClass.IN : RRClass.NONE,
      ttl: c.op === 'add' ? c.ttl : 0,
      rdata: encodeTxt(c.value),
    });
  }
  return w.toBuffer();
}

export interface Question {
  name: string;
  type: number;
  klass: number;
}

export interface ResourceRecord {
  name: string;
  type: number;
  klass: number;
  ttl: number;
  /** The RDATA bytes as sent (names inside may hold compression pointers into the message). */
  rdata: Buffer;
  /** Offset of the RDATA in the message, to decode names inside it. */
  rdataOffset: number;
  /** Offset of the record's first byte in the message. */
  offset: number;
}

export interface Message {
  header: Header;
  id: number;
  qr: boolean;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rcode: number;
  questions: Question[];
  answers: ResourceRecord[];
  authority: ResourceRecord[];
  additional: ResourceRecord[];
  /** The message bytes the records' offsets refer to. */
  raw: Buffer;
}

/** Reads a (possibly compressed) name at `offset`; returns it absolute and the offset after it. */
export function readName(buf: Buffer, offset: number): { name: string; next: number } {
  const parts: string[] = [];
  let pos = offset;
  let next = -1;
  let jumps = 0;
  for (;;) {
    if (pos >= buf.length) throw new WireError('name runs past the end of the message');
    const len = buf[pos] ?? 0;
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= buf.length) throw new WireError('truncated compression pointer');
      if (++jumps > 64) throw new WireError('compression pointer loop');
      if (next < 0) next = pos + 2;
      pos = ((len & 0x3f) << 8) | (buf[pos + 1] ?? 0);
      continue;
    }
    if ((len & 0xc0) !== 0) throw new WireError(`bad label type 0x${len.toString(16)}`);
    if (len === 0) {
      if (next < 0) next = pos + 1;
      break;
    }
    if (pos + 1 + len > buf.length) throw new WireError('label runs past the end of the message');
    parts.push(buf.toString('latin1', pos + 1, pos + 1 + len));
    pos += 1 + len;
  }
  return { name: parts.length === 0 ? '.' : `${parts.join('.')}.`, next };
}

function u16(buf: Buffer, offset: number): number {
  if (offset + 2 > buf.length) throw new WireError('message truncated');
  return buf.readUInt16BE(offset);
}

function u32(buf: Buffer, offset: number): number {
  if (offset + 4 > buf.length) throw new WireError('message truncated');
  return buf.readUInt32BE(offset);
}

/** Decodes a whole message. Throws WireError when it is malformed. */
export function parseMessage(raw: Buffer): Message {
  if (raw.length < 12) throw new WireError('message shorter than a header');
  const header: Header = {
    id: u16(raw, 0),
    flags: u16(raw, 2),
    qdcount: u16(raw, 4),
    ancount: u16(raw, 6),
    nscount: u16(raw, 8),
    arcount: u16(raw, 10),
  };
  let pos = 12;
  const questions: Question[] = [];
  for (let i = 0; i < header.qdcount; i++) {
    const { name, next } = readName(raw, pos);
    questions.push({ name, type: u16(raw, next), klass: u16(raw, next + 2) });
    pos = next + 4;
  }
  const section = (count: number): ResourceRecord[] => {
    const out: ResourceRecord[] = [];
    for (let i = 0; i < count; i++) {
      const offset = pos;
      const { name, next } = readName(raw, pos);
      const rdlength = u16(raw, next + 8);
      const rdataOffset = next + 10;
      if (rdataOffset + rdlength > raw.length) throw new WireError('record data runs past the end of the message');
      out.push({
        name,
        type: u16(raw, next),
        klass: u16(raw, next + 2),
        ttl: u32(raw, next + 4),
        rdata: raw.subarray(rdataOffset, rdataOffset + rdlength),
        rdataOffset,
        offset,
      });
      pos = rdataOffset + rdlength;
    }
    return out;
  };
  const answers = section(header.ancount);
  const authority = section(header.nscount);
  const additional = section(header.arcount);
  return {
    header,
    id: header.id,
    qr: (header.flags & 0x8000) !== 0,
    opcode: (header.flags >> 11) & 0xf,
    aa: (header.flags & 0x0400) !== 0,
    tc: (header.flags & 0x0200) !== 0,
    rcode: header.flags & 0xf,
    questions,
    answers,
    authority,
    additional,
    raw,
  };
}

/** The strings of a TXT record, each character-string decoded and concatenated (RFC 8555 §8.4 values fit in one). */
export function txtValue(rr: ResourceRecord): string {
  const parts: string[] = [];
  let pos = 0;
  while (pos < rr.rdata.length) {
    const len = rr.rdata[pos] ?? 0;
    if (pos + 1 + len > rr.rdata.length) throw new WireError('TXT string runs past its record');
    parts.push(rr.rdata.toString('utf8', pos + 1, pos + 1 + len));
    pos += 1 + len;
  }
  return parts.join('');
}

/** The target of a CNAME or NS record (absolute). */
export function nameValue(msg: Message, rr: ResourceRecord): string {
  return readName(msg.raw, rr.rdataOffset).name;
}

/** An A or AAAA record's address as text. */
export function addressValue(rr: ResourceRecord): string {
  if (rr.type === RRType.A && rr.rdata.length === 4) return [...rr.rdata].join('.');
  if (rr.type === RRType.AAAA && rr.rdata.length === 16) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(rr.rdata.readUInt16BE(i).toString(16));
    return groups.join(':');
  }
  throw new WireError(`record of type ${rr.type} with ${rr.rdata.length} bytes is not an address`);
}

/** Two names equal as DNS compares them (case-insensitive, trailing dot optional). */
export function sameName(a: string, b: string): boolean {
  return canonicalName(a) === canonicalName(b);
}

/** True when `name` is `zone` or below it. */
export function isSubdomain(name: string, zone: string): boolean {
  const n = canonicalName(name);
  const z = canonicalName(zone);
  return z === '.' || n === z || n.endsWith(`.${z}`);
}
