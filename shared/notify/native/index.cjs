// Loads the addon: the prebuilt one for this platform and CPU (prebuilds/, made by
// build-prebuilds.sh and committed), else one compiled on this machine by install.cjs
// (build/Release). Throws when neither loads; ../index.ts then falls back to the
// systemd-notify command. ../index.ts holds the policy.
'use strict';
const path = require('node:path');

/** Candidate files, in the order they are tried. */
function candidates() {
  return [
    path.join(__dirname, 'prebuilds', `${process.platform}-${process.arch}`, 'certfleet_sd_notify.node'),
    path.join(__dirname, 'build', 'Release', 'certfleet_sd_notify.node'),
  ];
}

function load() {
  const errors = [];
  for (const file of candidates()) {
    try {
      const binding = require(file);
      // Which file it was: the CI step that installs without a compiler checks it.
      Object.defineProperty(binding, 'loadedFrom', { value: file, enumerable: false });
      return binding;
    } catch (err) {
      errors.push(`${path.relative(__dirname, file)}: ${err.code === 'MODULE_NOT_FOUND' ? 'absent' : err.message}`);
    }
  }
  throw new Error(`no loadable certfleet_sd_notify.node for ${process.platform}-${process.arch} (${errors.join('; ')})`);
}

module.exports = load();
Object.defineProperty(module.exports, "candidates", { value: candidates, enumerable: false });
