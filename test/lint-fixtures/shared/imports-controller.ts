// Bad: shared/ imports controller/ (import-x/no-restricted-paths).
import { controllerThing } from '../controller/thing.js';
export const c = controllerThing;
