// Bad: cycle-a -> cycle-b -> cycle-a (import-x/no-cycle).
import { bee } from './cycle-b.js';
export const ay = (): number => bee() + 1;
