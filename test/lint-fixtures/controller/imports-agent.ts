// Bad: controller/ imports agent/ (import-x/no-restricted-paths).
import { agentThing } from '../agent/thing.js';
export const a = agentThing;
