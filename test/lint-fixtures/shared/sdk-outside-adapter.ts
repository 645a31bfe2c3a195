// Bad: acme-client outside controller/acme (house/sdk-in-adapter).
import * as acme from 'acme-client';
export const directory = acme.directory;
