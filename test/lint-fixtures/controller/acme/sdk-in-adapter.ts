// Fine: acme-client inside its adapter.
import * as acme from 'acme-client';
export const directory = acme.directory;
