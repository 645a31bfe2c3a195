// Fine: imported by the bad fixtures below.
export const controllerThing = 1;
