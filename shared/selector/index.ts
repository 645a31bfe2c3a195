/**
 * Label selectors: which agents serve a certificate.
 *
 * Syntax (a subset of Kubernetes label selectors, comma = AND):
 *   `*`                      every agent
 *   `role=lb`, `role==lb`    label equals value
 *   `role!=lb`               label absent or different
 *   `site in (a, b)`         label is one of
 *   `site notin (a, b)`      label absent or none of
 *   `edge`                   label present
 *   `!canary`                label absent
 * Pure: parse once, match many. A syntax error throws a plain Error whose message names
 * the bad part; callers turn it into a config problem with the field path.
 */

export type Requirement =
  | { op: 'eq'; key: string; value: string }
  | { op: 'neq'; key: string; value: string }
  | { op: 'in'; key: string; values: string[] }
  | { op: 'notin'; key: string; values: string[] }
  | { op: 'exists'; key: string }
  | { op: 'absent'; key: string };

/** A parsed selector; `all` matches every agent. */
export interface Selector {
  readonly text: string;
  readonly all: boolean;
  readonly requirements: readonly Requirement[];
}

const KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$/;
const VALUE = /^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/;

/** Label key rule (also used to validate agent labels). */
export function isValidLabelKey(key: string): boolean {
  return KEY.test(key);
}

/** Label value rule (empty allowed, as in Kubernetes). */
export function isValidLabelValue(value: string): boolean {
  return VALUE.test(value);
}

/**
 * Splits on commas that are not inside parentheses. Unbalanced parentheses throw here,
 * before a part is looked at: `role in (a,` is an unterminated set, and reporting its
 * pieces as label keys would send the operator after the wrong mistake.
 */
function splitTop(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '(') {
      if (depth > 0) throw new Error(`nested "(" in "${text}": a set is one list of values, e.g. "site in (a, b)"`);
      depth++;
    }
    if (ch === ')') {
      if (depth === 0) throw new Error(`")" without "(" in "${text}"`);
      depth--;
    }
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (depth > 0) throw new Error(`unterminated set in "${text}": expected ")" to close the list of values, e.g. "site in (a, b)"`);
  parts.push(cur);
  return parts.map((p) => p.trim());
}

/** Parses a selector. Throws Error with a message naming the bad part. */
export function parseSelector(text: string): Selector {
  const trimmed = text.trim();
  if (trimmed === '*') return { text: trimmed, all: true, requirements: [] };
  if (trimmed === '') throw new Error('empty selector (use "*" for every agent)');
  const requirements: Requirement[] = [];
  for (const part of splitTop(trimmed)) {
    if (part === '') throw new Error(`empty requirement in "${text}"`);
    const setMatch = /^([^\s!=]+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(part);
    if (setMatch) {
      const [, key = '', op, list = ''] = setMatch;
      const values = list.split(',').map((v) => v.trim());
      checkKey(key, part);
      for (const v of values) {
        if (v === '') throw new Error(`empty value in "${part}": a set lists values separated by ",", e.g. "site in (a, b)"`);
        if (!VALUE.test(v)) throw new Error(`bad value "${v}" in "${part}"`);
      }
      requirements.push({ op: op === 'in' ? 'in' : 'notin', key, values });
      continue;
    }
    if (part.includes('(')) {
      throw new Error(`bad set "${part}": expected KEY in (V1, V2) or KEY notin (V1, V2)`);
    }
    const cmp = /^([^\s!=]+)\s*(==|!=|=)\s*([^\s]*)$/.exec(part);
    if (cmp) {
      const [, key = '', op, value = ''] = cmp;
      checkKey(key, part);
      if (!VALUE.test(value)) throw new Error(`bad value "${value}" in "${part}"`);
      requirements.push(op === '!=' ? { op: 'neq', key, value } : { op: 'eq', key, value });
      continue;
    }
    if (part.startsWith('!')) {
      const key = part.slice(1).trim();
      checkKey(key, part);
      requirements.push({ op: 'absent', key });
      continue;
    }
    checkKey(part, part);
    requirements.push({ op: 'exists', key: part });
  }
  return { text: trimmed, all: false, requirements };
}

function checkKey(key: string, part: string): void {
  if (!KEY.test(key)) throw new Error(`bad label key "${key}" in "${part}"`);
}

/** Whether an agent with `labels` is selected. */
export function matches(selector: Selector, labels: Readonly<Record<string, string>>): boolean {
  if (selector.all) return true;
  return selector.requirements.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const v = has ? labels[r.key] : undefined;
    switch (r.op) {
      case 'eq':
        return v === r.value;
      case 'neq':
        return v !== r.value;
      case 'in':
        return v !== undefined && r.values.includes(v);
      case 'notin':
        return v === undefined || !r.values.includes(v);
      case 'exists':
        return has;
      case 'absent':
        return !has;
    }
  });
}

/** Parses and matches in one go (for callers that hold the text). */
export function selects(selectorText: string, labels: Readonly<Record<string, string>>): boolean {
  return matches(parseSelector(selectorText), labels);
}
