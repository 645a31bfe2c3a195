// Fine: cli/ loads the controller through its surface, lazily.
export const load = (): Promise<unknown> => import('../controller/index.js');
