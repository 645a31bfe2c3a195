// Bad: prom-client outside shared/metrics (house/sdk-in-adapter).
import { Counter } from 'prom-client';
export const counter = Counter;
