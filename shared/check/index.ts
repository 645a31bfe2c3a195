/**
 * Small strict validators for what the agent parses: its configuration and the records it
 * reads from NATS. Why not zod: zod (any of its entry points loads every locale) and the
 * schemas built with it are ~20 MiB of an idle agent's RSS on Node 20, a third of the
 * 64 MB target of issue #13 (docs/performance.md, Footprint). The controller keeps zod.
 *
 * The subset is what certfleet's schemas use, with zod 4's semantics and zod 4's English
 * messages, so a problem reads the same whichever library found it:
 *  - unknown fields of a `strictObject` are one `unrecognized_keys` issue listing them;
 *  - `default(v)` replaces a missing value by `v` as is, `prefault(v)` parses `v`;
 *  - `refine`/`superRefine` run unless the value had a problem that makes it unusable
 *    (a wrong type, a wrong option, a failed union); a failed length, pattern or
 *    refinement does not stop them, as in zod;
 *  - a union whose options all fail reports "Invalid input", unless exactly one option
 *    failed only on such a check: then that option's problems (zod's rule);
 *  - an issue never carries the value it is about (records can hold secrets).
 *
 * Each schema also exposes zod's walkable shape (`def.type`, `def.innerType`, `def.in`,
 * `def.element`, `def.valueType`, `def.options`, `shape`), which the configuration's
 * "unknown field (allowed: ...)" hint and the docs test walk.
 */

/** One problem, zod-4 shaped: `path` from the root, `keys` for `unrecognized_keys`. */
export interface Issue {
  code: string;
  path: PropertyKey[];
  message: string;
  keys?: string[];
}

/** zod-compatible result of {@link Schema.safeParse}. */
export type SafeParse<T> = { success: true; data: T } | { success: false; error: { issues: Issue[] } };

/** What a refinement reports through; `path` is relative to the refined value. */
export interface RefineContext {
  addIssue(issue: { code?: string; message: string; path?: PropertyKey[] }): void;
}

type Run<T> = (input: unknown, path: PropertyKey[], issues: Issue[]) => T;

/** The walkable description of a schema (the subset of zod's `def` that walkers read). */
export interface Def {
  type: string;
  innerType?: Schema<unknown>;
  in?: Schema<unknown>;
  element?: Schema<unknown>;
  valueType?: Schema<unknown>;
  options?: Array<Schema<unknown>>;
}

/** A validator producing `T`. Immutable: every method returns a new schema. */
export class Schema<T> {
  /** The output type, for `Infer` (never set). */
  declare readonly _output: T;
  constructor(
    readonly def: Def,
    /** Validates `input` at `path`, pushing issues; the return value counts only without new issues. */
    readonly run: Run<T>,
  ) {}

  /** Validates `input`; never throws for bad input. */
  safeParse(input: unknown): SafeParse<T> {
    const issues: Issue[] = [];
    const data = this.run(input, [], issues);
    return issues.length === 0 ? { success: true, data } : { success: false, error: { issues } };
  }

  optional(): Schema<T | undefined> {
    return new Schema<T | undefined>({ type: 'optional', innerType: this }, (input, path, issues) => (input === undefined ? undefined : this.run(input, path, issues)));
  }

  nullable(): Schema<T | null> {
    return new Schema<T | null>({ type: 'nullable', innerType: this }, (input, path, issues) => (input === null ? null : this.run(input, path, issues)));
  }

  /** A missing value becomes `value` (not validated, as zod 4). */
  default(value: Exclude<T, undefined>): Schema<Exclude<T, undefined>> {
    return new Schema<Exclude<T, undefined>>({ type: 'default', innerType: this }, (input, path, issues) =>
      input === undefined ? value : (this.run(input, path, issues) as Exclude<T, undefined>),
    );
  }

  /** A missing value is replaced by `value` before validation (zod 4's prefault). */
  prefault(value: unknown): Schema<Exclude<T, undefined>> {
    return new Schema<Exclude<T, undefined>>({ type: 'prefault', innerType: this }, (input, path, issues) => this.run(input === undefined ? value : input, path, issues) as Exclude<T, undefined>);
  }

  /** Adds a check, run only when the value had no problem so far. */
  refine(ok: (value: T) => boolean, opts: string | { message?: string; error?: string; path?: PropertyKey[] }): this {
    const message = typeof opts === 'string' ? opts : (opts.message ?? opts.error ?? 'Invalid input');
    const at = typeof opts === 'string' ? [] : (opts.path ?? []);
    return this.superRefine((value, ctx) => {
      if (!ok(value)) ctx.addIssue({ message, path: at });
    });
  }

  /**
   * Adds a check that reports its own issues, run only when the value had no problem so
   * far. The result keeps this schema's kind (an object's `shape` stays visible); add
   * refinements last: a later `min()` or `regex()` starts from the unrefined checks.
   */
  superRefine(check: (value: T, ctx: RefineContext) => void): this {
    const inner = this.run;
    const run: Run<T> = (input, path, issues) => {
      const before = issues.length;
      const value = inner(input, path, issues);
      if (!aborted(issues, before)) check(value, contextAt(path, issues));
      return value;
    };
    return Object.assign(Object.create(Object.getPrototypeOf(this) as object) as this, this, { run });
  }

  /** Maps a valid value; `fn` may report issues instead (zod 4's transform, a `pipe`). */
  transform<U>(fn: (value: T, ctx: RefineContext) => U): Schema<U> {
    return new Schema<U>({ type: 'pipe', in: this }, (input, path, issues) => {
      const before = issues.length;
      const value = this.run(input, path, issues);
      return issues.length === before ? fn(value, contextAt(path, issues)) : (undefined as U);
    });
  }
}

/** Problems after which the value still has its type, so refinements still run (zod's `continue`). */
const CONTINUABLE = new Set(['too_small', 'too_big', 'invalid_format', 'custom', 'invalid_key']);

/** Whether an issue from index `from` on makes the value unusable for refinements. */
function aborted(issues: Issue[], from: number): boolean {
  for (let i = from; i < issues.length; i++) if (!CONTINUABLE.has(issues[i]?.code ?? '')) return true;
  return false;
}

function contextAt(path: PropertyKey[], issues: Issue[]): RefineContext {
  return { addIssue: (i) => issues.push({ code: i.code ?? 'custom', path: [...path, ...(i.path ?? [])], message: i.message }) };
}

/** The type a schema produces. */
export type Infer<S> = S extends Schema<infer T> ? T : never;

/** zod's name for the type of `input` in "expected X, received Y". */
function received(input: unknown): string {
  if (input === null) return 'null';
  if (Array.isArray(input)) return 'array';
  if (typeof input === 'number') return Number.isNaN(input) ? 'NaN' : Number.isFinite(input) ? 'number' : String(input);
  return typeof input;
}

function invalidType(expected: string, input: unknown, path: PropertyKey[], issues: Issue[]): void {
  issues.push({ code: 'invalid_type', path, message: `Invalid input: expected ${expected}, received ${received(input)}` });
}

type Check<T> = (value: T, path: PropertyKey[], issues: Issue[]) => void;

/** A string schema with zod's length and pattern checks. */
export class StringSchema extends Schema<string> {
  constructor(private readonly checks: ReadonlyArray<Check<string>> = []) {
    super({ type: 'string' }, (input, path, issues) => {
      if (typeof input !== 'string') {
        invalidType('string', input, path, issues);
        return '';
      }
      for (const c of this.checks) c(input, path, issues);
      return input;
    });
  }
  private with(check: Check<string>): StringSchema {
    return new StringSchema([...this.checks, check]);
  }
  min(n: number, message?: string): StringSchema {
    return this.with((v, path, issues) => {
      if (v.length < n) issues.push({ code: 'too_small', path, message: message ?? `Too small: expected string to have >=${n} characters` });
    });
  }
  max(n: number, message?: string): StringSchema {
    return this.with((v, path, issues) => {
      if (v.length > n) issues.push({ code: 'too_big', path, message: message ?? `Too big: expected string to have <=${n} characters` });
    });
  }
  regex(re: RegExp, message?: string): StringSchema {
    return this.with((v, path, issues) => {
      re.lastIndex = 0;
      if (!re.test(v)) issues.push({ code: 'invalid_format', path, message: message ?? `Invalid string: must match pattern ${String(re)}` });
    });
  }
}

/** A number schema (finite; `int` also a safe integer) with zod's bounds. */
export class NumberSchema extends Schema<number> {
  constructor(
    private readonly integer: boolean,
    private readonly checks: ReadonlyArray<Check<number>> = [],
  ) {
    super({ type: 'number' }, (input, path, issues) => {
      if (typeof input !== 'number' || !Number.isFinite(input) || (integer && !Number.isInteger(input))) {
        invalidType(integer && typeof input === 'number' && Number.isFinite(input) ? 'int' : 'number', input, path, issues);
        return 0;
      }
      if (integer && !Number.isSafeInteger(input)) {
        issues.push(input > 0 ? { code: 'too_big', path, message: `Too big: expected int to be <=${Number.MAX_SAFE_INTEGER}` } : { code: 'too_small', path, message: `Too small: expected int to be >=${Number.MIN_SAFE_INTEGER}` });
        return 0;
      }
      for (const c of this.checks) c(input, path, issues);
      return input;
    });
  }
  min(n: number, message?: string): NumberSchema {
    return new NumberSchema(this.integer, [
      ...this.checks,
      (v, path, issues) => {
        if (v < n) issues.push({ code: 'too_small', path, message: message ?? `Too small: expected number to be >=${n}` });
      },
    ]);
  }
  max(n: number, message?: string): NumberSchema {
    return new NumberSchema(this.integer, [
      ...this.checks,
      (v, path, issues) => {
        if (v > n) issues.push({ code: 'too_big', path, message: message ?? `Too big: expected number to be <=${n}` });
      },
    ]);
  }
}

/** An array schema with zod's length checks. */
export class ArraySchema<T> extends Schema<T[]> {
  constructor(
    readonly element: Schema<T>,
    private readonly checks: ReadonlyArray<Check<T[]>> = [],
  ) {
    super({ type: 'array', element: element }, (input, path, issues) => {
      if (!Array.isArray(input)) {
        invalidType('array', input, path, issues);
        return [];
      }
      const out = input.map((v, i) => element.run(v, [...path, i], issues));
      for (const c of this.checks) c(out, path, issues);
      return out;
    });
  }
  min(n: number, message?: string): ArraySchema<T> {
    return new ArraySchema(this.element, [
      ...this.checks,
      (v, path, issues) => {
        if (v.length < n) issues.push({ code: 'too_small', path, message: message ?? `Too small: expected array to have >=${n} items` });
      },
    ]);
  }
  max(n: number, message?: string): ArraySchema<T> {
    return new ArraySchema(this.element, [
      ...this.checks,
      (v, path, issues) => {
        if (v.length > n) issues.push({ code: 'too_big', path, message: message ?? `Too big: expected array to have <=${n} items` });
      },
    ]);
  }
}

type Shape = Record<string, Schema<unknown>>;
type OptionalKeys<S extends Shape> = { [K in keyof S]: undefined extends Infer<S[K]> ? K : never }[keyof S];
type Flat<T> = { [K in keyof T]: T[K] } & {};
/** The output of an object schema: fields that may be undefined are optional, as in zod. */
export type ObjectOutput<S extends Shape> = Flat<{ [K in Exclude<keyof S, OptionalKeys<S>>]: Infer<S[K]> } & { [K in OptionalKeys<S>]?: Infer<S[K]> }>;

const isPlainObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** An object with exactly these fields: any other is an `unrecognized_keys` issue. */
export class ObjectSchema<S extends Shape> extends Schema<ObjectOutput<S>> {
  constructor(readonly shape: S) {
    super({ type: 'object' }, (input, path, issues) => {
      if (!isPlainObject(input)) {
        invalidType('object', input, path, issues);
        return {} as ObjectOutput<S>;
      }
      const out: Record<string, unknown> = {};
      for (const [key, schema] of Object.entries(shape)) {
        const value = schema.run(input[key], [...path, key], issues);
        if (value !== undefined || key in input) out[key] = value;
      }
      const unknown = Object.keys(input).filter((k) => !Object.hasOwn(shape, k));
      if (unknown.length > 0) {
        issues.push({ code: 'unrecognized_keys', path, keys: unknown, message: `Unrecognized key${unknown.length > 1 ? 's' : ''}: ${unknown.map((k) => JSON.stringify(k)).join(', ')}` });
      }
      return out as ObjectOutput<S>;
    });
  }
}

/** A map with string keys checked by `key` and values by `value`. */
export class RecordSchema<V> extends Schema<Record<string, V>> {
  constructor(key: StringSchema, value: Schema<V>) {
    super({ type: 'record', valueType: value }, (input, path, issues) => {
      if (!isPlainObject(input)) {
        invalidType('record', input, path, issues);
        return {};
      }
      const out: Record<string, V> = {};
      for (const [k, v] of Object.entries(input)) {
        const keyIssues: Issue[] = [];
        key.run(k, [...path, k], keyIssues);
        if (keyIssues.length > 0) issues.push({ code: 'invalid_key', path: [...path, k], message: keyIssues[0]?.message ?? 'Invalid key in record' });
        out[k] = value.run(v, [...path, k], issues);
      }
      return out;
    });
  }
}

const quote = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : String(v));

/** The schema constructors, named as zod's (`c.string()`, `c.strictObject({...})`, ...). */
export const c = {
  string: (): StringSchema => new StringSchema(),
  number: (): NumberSchema => new NumberSchema(false),
  int: (): NumberSchema => new NumberSchema(true),
  boolean: (): Schema<boolean> =>
    new Schema<boolean>({ type: 'boolean' }, (input, path, issues) => {
      if (typeof input !== 'boolean') invalidType('boolean', input, path, issues);
      return input === true;
    }),
  literal: <const L extends string | number | boolean>(value: L): Schema<L> =>
    new Schema<L>({ type: 'literal' }, (input, path, issues) => {
      if (input !== value) issues.push({ code: 'invalid_value', path, message: `Invalid input: expected ${quote(value)}` });
      return value;
    }),
  enum: <const E extends readonly [string, ...string[]]>(values: E): Schema<E[number]> =>
    new Schema<E[number]>({ type: 'enum' }, (input, path, issues) => {
      if (typeof input !== 'string' || !values.includes(input)) {
        issues.push({ code: 'invalid_value', path, message: values.length === 1 ? `Invalid input: expected ${quote(values[0])}` : `Invalid option: expected one of ${values.map(quote).join('|')}` });
        return values[0];
      }
      return input;
    }),
  array: <T>(element: Schema<T>): ArraySchema<T> => new ArraySchema(element),
  strictObject: <S extends Shape>(shape: S): ObjectSchema<S> => new ObjectSchema(shape),
  record: <V>(key: StringSchema, value: Schema<V>): RecordSchema<V> => new RecordSchema(key, value),
  /** The first option that accepts the value wins; none: one "Invalid input" issue. */
  union: <const O extends ReadonlyArray<Schema<unknown>>>(options: O): Schema<Infer<O[number]>> =>
    new Schema<Infer<O[number]>>({ type: 'union', options: [...options] }, (input, path, issues) => {
      const typed: Issue[][] = [];
      for (const option of options) {
        const mine: Issue[] = [];
        const value = option.run(input, path, mine);
        if (mine.length === 0) return value as Infer<O[number]>;
        if (!aborted(mine, 0)) typed.push(mine);
      }
      if (typed.length === 1 && typed[0] !== undefined) issues.push(...typed[0]);
      else issues.push({ code: 'invalid_union', path, message: 'Invalid input' });
      return undefined as Infer<O[number]>;
    }),
};
