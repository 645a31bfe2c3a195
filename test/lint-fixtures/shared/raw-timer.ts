// Bad: a raw setTimeout outside shared/clock (house/clock-only).
export const later = (fn: () => void): unknown => setTimeout(fn, 1000);
