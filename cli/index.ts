/**
 * The `certfleet` command's public surface, for tests and for anything that embeds the
 * CLI. The executable itself is main.ts.
 */
export { runCli, reportError, packageVersion, type CliIo } from './run.js';
export { parseCommandLine, usageError, DEFAULT_TIMEOUT_MS, DEFAULT_WAIT_TIMEOUT_MS, type Invocation, type OperatorOptions, type TokenSource, type WaitOptions } from './args.js';
export { waitServed, waitStep, WAIT_INTERVAL_MS, type WaitDeps, type WaitStep, type WaitTarget } from './wait.js';
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
  eventKey,
  formatDuration,
  formatLabels,
  newEvents,
  relativeTime,
  renderAgents,
  renderBudgets,
  renderCertificate,
  renderCertificates,
  renderEnrolled,
  renderEvent,
  renderEvents,
  renderHistory,
  renderJson,
  renderRelease,
  renderRenew,
  renderRevoke,
  renderRollback,
  renderServed,
  renderStatus,
  renderTokenNote,
  renderOperatorCreated,
  renderOperatorRevoked,
  renderOperatorRole,
  renderOperators,
  renderWhoAmI,
  shortFingerprint,
  type RenderOptions,
} from './render.js';
