#!/usr/bin/env bash
# Refreshes panel/vendor/ from the versions pinned in package.json and
# package-lock.json: the ES module builds, their CSS and their licences.
# The panel is compiled into the server binary, so these files are committed;
# run this only to move to another version (edit package.json, then run it).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --ignore-scripts --silent
rm -rf vendor
mkdir -p vendor/xterm vendor/addon-fit vendor/uplot
cp node_modules/@xterm/xterm/lib/xterm.mjs node_modules/@xterm/xterm/css/xterm.css \
   node_modules/@xterm/xterm/LICENSE vendor/xterm/
cp node_modules/@xterm/addon-fit/lib/addon-fit.mjs node_modules/@xterm/addon-fit/LICENSE \
   vendor/addon-fit/
cp node_modules/uplot/dist/uPlot.esm.js node_modules/uplot/dist/uPlot.min.css \
   node_modules/uplot/LICENSE vendor/uplot/
# The source-map comments point at files that are not shipped.
sed -i '/^\/\/# sourceMappingURL=/d' vendor/xterm/xterm.mjs vendor/addon-fit/addon-fit.mjs
{
    echo "# Vendored libraries (written by vendor.sh; do not edit)"
    echo
    for p in @xterm/xterm @xterm/addon-fit uplot; do
        node -e 'const p=require("./node_modules/"+process.argv[1]+"/package.json");
                 console.log("- "+p.name+" "+p.version+", "+p.license+" licence")' "$p"
    done
} >vendor/VERSIONS.md
rm -rf node_modules
echo "vendor/ refreshed:"; cat vendor/VERSIONS.md
