// Bad: node:timers/promises outside shared/clock (house/clock-only).
import { setTimeout as sleep } from 'node:timers/promises';
export const nap = (): Promise<void> => sleep(10);
