// Fine: the controller's surface, which cli/ may import.
export { controllerThing } from './thing.js';
