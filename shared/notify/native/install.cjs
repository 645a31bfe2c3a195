// `npm ci` runs this (the package's install script). When the prebuilt addon for this
// platform and CPU loads, that is all: no compiler, no Node headers, no network. Otherwise
// it compiles one with node-gyp (npm's own copy) into build/Release. A failed compile is a
// warning, not a failed install: the daemons then speak sd_notify through the
// systemd-notify command (see docs/operations.md), which needs NotifyAccess=all.
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const prebuilt = path.join(__dirname, 'prebuilds', `${process.platform}-${process.arch}`, 'certfleet_sd_notify.node');
try {
  require(prebuilt);
  console.log(`certfleet-sd-notify: using the prebuilt ${path.relative(__dirname, prebuilt)}`);
  process.exit(0);
} catch (err) {
  console.log(`certfleet-sd-notify: no usable prebuilt addon for ${process.platform}-${process.arch} (${err.code === 'MODULE_NOT_FOUND' ? 'none shipped' : err.message}); compiling one`);
}

// npm tells its scripts where its node-gyp is; outside npm, try the one on PATH.
const gyp = process.env.npm_config_node_gyp;
const r = gyp ? spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: __dirname, stdio: 'inherit' }) : spawnSync('node-gyp', ['rebuild'], { cwd: __dirname, stdio: 'inherit' });
if (r.status === 0) process.exit(0);
console.warn(
  'certfleet-sd-notify: WARNING: could not compile the addon (node-gyp needs python3, make and a C compiler).\n' +
    'certfleet still runs; under systemd it sends READY/STATUS/WATCHDOG through the systemd-notify command,\n' +
    'which needs NotifyAccess=all in the unit (see docs/operations.md).',
);
process.exit(0);
