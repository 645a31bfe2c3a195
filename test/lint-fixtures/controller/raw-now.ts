// Bad: Date.now() outside shared/clock (house/clock-only).
export const now = (): number => Date.now();
