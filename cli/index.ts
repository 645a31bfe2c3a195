/**
 * The `certfleet` command's public surface, for tests and for anything that embeds the
 * CLI. The executable itself is main.ts.
 */
export { runCli, reportError, packageVersion, type CliIo } from './run.js';
export { parseCommandLine, usageError, DEFAULT_TIMEOUT_MS, type Invocation, type OperatorOptions, type TokenSource } from './args.js';
export { helpText, type CommandName } from './usage.js';
export {
  CREDENTIALS_ENV,
  DEFAULT_CREDENTIALS_FILE,
  credentialsPath,
  loadCredentials,
  parseCredentials,
  type OperatorCredentials,
} from './credentials.js';
export { operatorClient, type OperatorClient } from './client.js';
export {
  formatDuration,
  formatLabels,
  relativeTime,
  renderAgents,
  renderCertificates,
  renderEnrolled,
  renderJson,
  renderStatus,
  renderTokenNote,
  type RenderOptions,
} from './render.js';
