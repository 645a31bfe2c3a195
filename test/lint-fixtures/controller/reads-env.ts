// Bad: process.env outside config modules (house/env-in-config).
export const home = (): string | undefined => process.env['HOME'];
