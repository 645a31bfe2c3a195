// Fine: imported by the bad fixtures below.
export const agentThing = 2;
