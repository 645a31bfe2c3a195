/**
 * The Prometheus text exposition format (version 0.0.4), written by hand: it is a few
 * lines of rules and not worth a dependency. Pure: families in, text out.
 *
 * https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
 */
import { CertfleetError, ErrorCode } from '../../shared/errors/index.js';
import type { MetricDef } from './names.js';

/** The Content-Type of the text format. */
export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** One sample: a value for one combination of label values. */
export interface Sample {
  labels: Readonly<Record<string, string>>;
  value: number;
}

/** A metric family and its samples. */
export interface Family {
  def: MetricDef;
  samples: readonly Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A label value escaped for the text format: `\` → `\\`, `"` → `\"`, newline → `\n`. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escaped for the text format: `\` → `\\`, newline → `\n` (quotes stay). */
export function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A sample value as the format writes it: integers plainly, `NaN`, `+Inf`, `-Inf`. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

/**
 * Renders `families` in order: `# HELP`, `# TYPE`, then one line per sample (a family
 * without samples still gets its HELP and TYPE, so its name is discoverable). Throws
 * INTERNAL on a programming error the format cannot express: an invalid metric or label
 * name, a sample whose labels are not exactly the family's, a family or series twice.
 */
export function renderExposition(families: readonly Family[]): string {
  const lines: string[] = [];
  const names = new Set<string>();
  for (const { def, samples } of families) {
    if (!METRIC_NAME.test(def.name)) throw new CertfleetError(ErrorCode.Internal, `invalid metric name "${def.name}"`);
    if (names.has(def.name)) throw new CertfleetError(ErrorCode.Internal, `metric ${def.name} rendered twice`);
    names.add(def.name);
    for (const l of def.labels) {
      if (!LABEL_NAME.test(l) || l.startsWith('__')) throw new CertfleetError(ErrorCode.Internal, `invalid label name "${l}" on ${def.name}`);
    }
    lines.push(`# HELP ${def.name} ${escapeHelp(def.help)}`, `# TYPE ${def.name} ${def.type}`);
    const series = new Set<string>();
    for (const s of samples) {
      const keys = Object.keys(s.labels);
      if (keys.length !== def.labels.length || def.labels.some((l) => !(l in s.labels))) {
        throw new CertfleetError(ErrorCode.Internal, `sample of ${def.name} has labels {${keys.join(',')}}, expected {${def.labels.join(',')}}`);
      }
      const labelText = def.labels.map((l) => `${l}="${escapeLabelValue(s.labels[l] ?? '')}"`).join(',');
      if (series.has(labelText)) throw new CertfleetError(ErrorCode.Internal, `series ${def.name}{${labelText}} rendered twice`);
      series.add(labelText);
      lines.push(`${def.name}${labelText === '' ? '' : `{${labelText}}`} ${formatValue(s.value)}`);
    }
  }
  return lines.length === 0 ? '' : lines.join('\n') + '\n';
}
