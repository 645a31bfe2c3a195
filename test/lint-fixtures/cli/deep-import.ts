// Bad: cli/ reaches past the controller's index.ts (import-x/no-restricted-paths).
export const load = (): Promise<unknown> => import('../controller/thing.js');
