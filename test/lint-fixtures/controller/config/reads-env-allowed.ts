// Fine: config modules read process.env.
export const home = (): string | undefined => process.env['HOME'];
