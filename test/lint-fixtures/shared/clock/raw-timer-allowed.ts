// Fine: shared/clock owns the raw timers.
export const later = (fn: () => void): unknown => setTimeout(fn, Date.now() % 10);
