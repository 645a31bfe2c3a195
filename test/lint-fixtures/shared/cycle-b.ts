// Bad: cycle-b -> cycle-a -> cycle-b (import-x/no-cycle).
import { ay } from './cycle-a.js';
export const bee = (): number => (Math.random() > 2 ? ay() : 0);
