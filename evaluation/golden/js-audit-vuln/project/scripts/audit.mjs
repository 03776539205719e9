// Offline audit against the mirrored advisory database (npm audit's report format).
import { readFileSync } from "node:fs";

const lock = JSON.parse(readFileSync("package-lock.json", "utf8"));
const advisories = JSON.parse(readFileSync("security/advisories.json", "utf8"));
const below = (v, max) => v.split(".").map(Number).reduce((a, n, i) => a ?? (n !== max[i] ? n < max[i] : null), null);
let found = 0;
for (const [path, { version }] of Object.entries(lock.packages)) {
  const name = path.replace("node_modules/", "");
  for (const adv of advisories.filter((a) => a.package === name)) {
    if (below(version, adv.vulnerable.slice(1).split(".").map(Number))) {
      console.log(`${name}  ${adv.vulnerable}\nSeverity: ${adv.severity}\n${adv.title} - https://github.com/advisories/${adv.id}`);
      found++;
    }
  }
}
if (found) {
  console.log(`\n${found} ${advisories[0].severity} severity vulnerability`);
  process.exit(1);
}
console.log("found 0 vulnerabilities");
