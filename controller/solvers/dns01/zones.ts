/**
 * Zone lookups remembered per name, shared by every provider that discovers zones (RFC 2136
 * by SOA queries, the cloud APIs by listing zones): concurrent challenges for one name ask
 * once, and a failed lookup is forgotten so the next attempt asks again.
 */
export class ZoneCache<T> {
  private readonly found = new Map<string, Promise<T>>();

  /** The zone for `key`, from `find` the first time (and again after a failure). */
  get(key: string, find: (key: string) => Promise<T>): Promise<T> {
    let zone = this.found.get(key);
    if (!zone) {
      zone = find(key);
      this.found.set(key, zone);
      // A failure must not stick: the next attempt asks again.
      zone.catch(() => this.found.delete(key));
    }
    return zone;
  }
}
