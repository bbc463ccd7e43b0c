#!/usr/bin/env node
// The partflow CLI; `npm run build` compiles it into dist/.
const { main } = require('../dist/operator/cli.js');
main(process.argv.slice(2)).then((code) => process.exit(code));
