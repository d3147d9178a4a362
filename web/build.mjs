// Builds the dashboard: web/src -> OUT/{index.html, assets/app.js, assets/app.css}.
//   node build.mjs --out DIR      (CMake passes a folder in the build tree)
// One bundle, minified, no source maps, nothing loaded from elsewhere at run time.
import { build } from "esbuild";
import { mkdirSync, readFileSync, writeFileSync, copyFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const i = process.argv.indexOf("--out");
const out = i > 0 ? process.argv[i + 1] : join(here, "dist");

mkdirSync(join(out, "assets"), { recursive: true });
await build({
  entryPoints: [join(here, "src/main.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  outfile: join(out, "assets/app.js"),
  legalComments: "none",
  logLevel: "warning",
});
const css =
  readFileSync(join(here, "node_modules/uplot/dist/uPlot.min.css"), "utf8") +
  "\n" +
  readFileSync(join(here, "src/style.css"), "utf8");
writeFileSync(join(out, "assets/app.css"), css);
copyFileSync(join(here, "src/index.html"), join(out, "index.html"));
