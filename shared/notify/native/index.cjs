// Loads the addon built by `npm ci` (node-gyp rebuild); ../index.ts holds the policy.
'use strict';
module.exports = require('./build/Release/certfleet_sd_notify.node');
