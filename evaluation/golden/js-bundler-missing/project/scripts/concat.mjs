// Fallback bundler: inlines the ES modules of src/ in dependency order (no minification).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";

const seen = new Set();
const out = [];
function add(file) {
  if (seen.has(file)) return;
  seen.add(file);
  const text = readFileSync(`src/${file}`, "utf8");
  for (const [, dep] of text.matchAll(/from "\.\/([^"]+)"/g)) add(dep);
  out.push(text.replace(/^import .*$/gm, "").replace(/^export /gm, ""));
}
add("main.js");
mkdirSync("dist", { recursive: true });
writeFileSync("dist/app.js", out.join("\n"));
console.log(`dist/app.js: ${seen.size} modules`);
