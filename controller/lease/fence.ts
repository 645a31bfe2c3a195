/**
 * Fencing for store writes (issue #12): a CertStore whose writes ask the lease first, so a
 * follower or a deposed leader never stores a version, an order record, an ARI record or a
 * DNS journal entry. Reads pass through. Given to the work loop's modules only (issuer,
 * spool delivery, ARI, DNS journal, the loop's intents); enrolment, operators and the CA
 * keep the plain store (every controller serves them).
 */
import type { CertStore } from '../store/index.js';

/** `store` with `fence()` called right before every write (it throws NOT_LEADER). */
export function fencedStore(store: CertStore, fence: () => unknown): CertStore {
  return {
    kind: store.kind,
    putVersion: (name, input, expectedLatest) => {
      fence();
      return store.putVersion(name, input, expectedLatest);
    },
    getVersion: (name, version) => store.getVersion(name, version),
    latest: (name) => store.latest(name),
    listVersions: (name) => store.listVersions(name),
    listNames: () => store.listNames(),
    getObject: <T>(key: string) => store.getObject<T>(key),
    putObject: (key, value) => {
      fence();
      return store.putObject(key, value);
    },
    deleteObject: (key) => {
      fence();
      return store.deleteObject(key);
    },
    listObjects: (prefix) => store.listObjects(prefix),
    // The plain store is closed by its owner (the runtime).
    close: () => Promise.resolve(),
  };
}
