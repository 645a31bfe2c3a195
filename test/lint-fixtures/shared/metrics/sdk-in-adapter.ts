// Fine: prom-client inside its adapter.
import { Registry } from 'prom-client';
export const registry = Registry;
